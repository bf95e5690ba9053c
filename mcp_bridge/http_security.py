"""Who may use `voice-mcp serve --http`: a bearer token and Host/Origin allow-lists.

Whoever reaches the MCP endpoint can make this machine speak and listen, so:
- on loopback, the MCP SDK's DNS-rebinding protection applies (Host/Origin must name 127.0.0.1/localhost/[::1]),
  and `VOICE_MCP_HTTP_TOKEN`, when set, is required as well;
- on any other address a bearer token is always required: `VOICE_MCP_HTTP_TOKEN`, or one generated on the first
  such start, stored 0600 in the data dir and printed once; Host must be in an allow-list
  (`VOICE_MCP_HTTP_ALLOWED_HOSTS`, or the bound address itself), Origin (sent by browsers) must match it.
  A wildcard bind (0.0.0.0, ::) without an allow-list refuses to start: no way to tell which names are ours.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import ASGIApp, Receive, Scope, Send

from agent.config import Settings

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_FILE = "http-token"


class HttpSetupError(ValueError):
    """A `serve --http` setup that must not start; the message says what to set."""


@dataclass(frozen=True)
class HttpAccess:
    token: str | None
    transport_security: TransportSecuritySettings


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def http_access(settings: Settings, host: str, port: int) -> HttpAccess:
    if is_loopback(host):
        hosts = ["127.0.0.1:*", "localhost:*", "[::1]:*", *settings.http_allowed_hosts]
        return HttpAccess(settings.http_token, _security(hosts))
    if settings.http_allowed_hosts:
        hosts = list(settings.http_allowed_hosts)
    elif host in ("0.0.0.0", "::", ""):
        raise HttpSetupError(
            f"--host {host or '(all)'} listens on every address, so the Host header cannot be checked: set "
            "VOICE_MCP_HTTP_ALLOWED_HOSTS to the names clients use (e.g. myhost.lan:8765,192.168.1.20:8765)"
        )
    else:
        hosts = [f"{_bracket(host)}:{port}"]
    return HttpAccess(settings.http_token or stored_token(settings.data_dir), _security(hosts))


def _security(hosts: list[str]) -> TransportSecuritySettings:
    origins = [f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")]
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=hosts, allowed_origins=origins)


def stored_token(data_dir: Path) -> str:
    """The generated token: made once, kept 0600 in the data dir, printed only when it is made."""
    path = data_dir / TOKEN_FILE
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    print(
        f"voice-mcp: generated the HTTP bearer token (shown once; kept in {path}):\n  {token}\n"
        "MCP clients send it as `Authorization: Bearer <token>`; set VOICE_MCP_HTTP_TOKEN to choose your own.",
        file=sys.stderr,
    )
    return token


class BearerTokenMiddleware:
    """Refuses every HTTP request without `Authorization: Bearer <token>` (constant-time comparison)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._expected):
                body = json.dumps(
                    {"error": "unauthorized", "message": "send Authorization: Bearer <VOICE_MCP_HTTP_TOKEN>"}
                ).encode()
                await send({
                    "type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer"),
                                (b"cache-control", b"no-store")],
                })
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
