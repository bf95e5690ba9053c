"""Access-token verification, the way livekit-server checks the tokens it is given.

Tokens are HS256 JWTs signed with one of the configured API secrets; the key is named by
the ``iss`` claim. Verification itself is delegated to ``livekit.api.TokenVerifier`` (the
same code the SDK ships), this module only picks the secret and turns failures into the
HTTP status livekit-server would answer with.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import jwt
from aiohttp import web
from livekit import api


class AuthError(Exception):
    """A request whose credentials were refused; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Credentials:
    """A verified token: its claims and the API key that signed it."""

    api_key: str
    claims: api.Claims

    @property
    def video(self) -> api.VideoGrants:
        return self.claims.video or api.VideoGrants()


class KeyStore:
    """The API keys this server accepts, and the verification of tokens signed with them."""

    def __init__(self, keys: dict[str, str]) -> None:
        if not keys:
            raise ValueError("at least one API key is required")
        self.keys = dict(keys)

    def secret(self, api_key: str) -> str:
        try:
            return self.keys[api_key]
        except KeyError:
            raise AuthError(f"invalid API key: {api_key}") from None

    def verify(self, token: str) -> Credentials:
        """Verify signature, issuer and expiry; raise AuthError (401) on any failure."""
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as e:
            raise AuthError(f"invalid authorization token: {e}") from None
        api_key = str(unverified.get("iss", ""))
        secret = self.secret(api_key)
        verifier = api.TokenVerifier(api_key, secret, leeway=datetime.timedelta(seconds=5))
        try:
            claims = verifier.verify(token)
        except jwt.PyJWTError as e:
            raise AuthError(f"invalid authorization token: {e}") from None
        return Credentials(api_key=api_key, claims=claims)

    def from_request(self, request: web.Request) -> Credentials:
        """Credentials of an HTTP/websocket request (``Authorization: Bearer`` or ``access_token``)."""
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
        token = token or request.query.get("access_token", "")
        if not token:
            raise AuthError("authorization header missing")
        return self.verify(token)


def require_join(creds: Credentials, room_hint: str = "") -> str:
    """The room a join token may enter; 401 unless it has ``room_join``, a room and an identity."""
    video = creds.video
    if not video.room_join:
        raise AuthError("permissions denied: token has no roomJoin grant")
    if not creds.claims.identity:
        raise AuthError("identity cannot be empty", status=400)
    if not video.room:
        raise AuthError("room name cannot be empty", status=400)
    if room_hint and room_hint != video.room:
        raise AuthError("permissions denied: token is for another room")
    return video.room


def require_admin(creds: Credentials, room: str) -> None:
    """Admin rights over ``room``: ``room_admin`` and the same room in the token."""
    video = creds.video
    if not video.room_admin or video.room != room:
        raise AuthError(f"permissions denied: no roomAdmin grant for room {room!r}")


def require_create(creds: Credentials) -> None:
    if not creds.video.room_create:
        raise AuthError("permissions denied: no roomCreate grant")


def require_list(creds: Credentials) -> None:
    if not creds.video.room_list:
        raise AuthError("permissions denied: no roomList grant")


def require_agent(creds: Credentials) -> None:
    if not creds.video.agent:
        raise AuthError("permissions denied: no agent grant")
