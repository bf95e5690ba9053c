"""Room tokens for browsers: the persistent room only, a user's grants only, one hour at most."""

from __future__ import annotations

import datetime
import re

from livekit import api

from agent.config import Settings
from agent.protocol import ATTR_ROLE

TOKEN_TTL = datetime.timedelta(minutes=15)
"""Short: a token is only checked on connect, and the page fetches a fresh one with its session to reconnect."""
USER = "user"
_NAME = re.compile(r"[^\w .'-]", re.UNICODE)


def device_identity(device: str) -> str:
    """`<user>-<device>`: stable per device, never chosen by the browser (it could claim the bridge's identity)."""
    return f"{USER}-{device}"


def mint_device_token(settings: Settings, device: str, display_name: str | None = None) -> str:
    assert settings.livekit_api_key and settings.livekit_api_secret  # checked when the service starts
    grants = api.VideoGrants(
        room_join=True,
        room=settings.room,  # whatever room the request named: the configured room only
        can_publish=True,
        can_publish_sources=["microphone"],
        can_publish_data=True,
        can_subscribe=True,
        can_update_own_metadata=False,
    )
    name = _NAME.sub("", display_name or "")[:64].strip() or f"{USER} ({device[:4]})"
    return (
        api.AccessToken(settings.livekit_api_key, settings.livekit_api_secret)
        .with_identity(device_identity(device))
        .with_name(name)
        .with_attributes({ATTR_ROLE: "user"})
        .with_grants(grants)
        .with_ttl(TOKEN_TTL)
        .to_jwt()
    )
