"""Room tokens minted inside the bridge process: the API secret never leaves it."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass

from livekit import api

from agent.protocol import ATTR_ROLE


@dataclass(frozen=True)
class Token:
    jwt: str
    expires_at: float  # unix time


class TokenSource:
    """Mints the bridge's room token and mints a fresh one before the current one gets old.

    A token is only checked when a connection is made, so every (re)connect asks `current()`, which re-mints
    once less than `refresh_fraction` of the lifetime is left. A reconnect therefore never uses an expired
    token, however long the bridge runs.
    """

    def __init__(
        self,
        *,
        api_key: str,
        api_secret: str,
        room: str,
        identity: str,
        ttl: datetime.timedelta = datetime.timedelta(hours=6),
        refresh_fraction: float = 0.2,
    ) -> None:
        self._api_key = api_key
        self._api_secret = api_secret
        self._room = room
        self._identity = identity
        self._ttl = ttl
        self._refresh_fraction = refresh_fraction
        self._token: Token | None = None
        self.minted = 0

    def current(self) -> Token:
        now = time.time()
        token = self._token
        if token is None or token.expires_at - now < self._ttl.total_seconds() * self._refresh_fraction:
            token = self._token = self._mint(now)
        return token

    def _mint(self, now: float) -> Token:
        grants = api.VideoGrants(
            room_join=True,
            room=self._room,
            can_publish=True,
            can_subscribe=True,
            can_publish_data=True,
            can_update_own_metadata=True,
        )
        jwt = (
            api.AccessToken(self._api_key, self._api_secret)
            .with_identity(self._identity)
            .with_name("voice-mcp bridge")
            .with_attributes({ATTR_ROLE: "bridge"})
            .with_grants(grants)
            .with_ttl(self._ttl)
            .to_jwt()
        )
        self.minted += 1
        return Token(jwt=jwt, expires_at=now + self._ttl.total_seconds())
