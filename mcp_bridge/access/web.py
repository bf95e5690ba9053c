"""`voice-mcp web`: the page at `/` and LiveKit's standard token endpoint `POST /api/token` (Starlette + uvicorn).

The endpoint speaks the protocol of livekit-client's `TokenSource.endpoint`: a JSON body (`room_name`,
`participant_identity`, `participant_name`, … — all advisory, unknown fields ignored), an access code as
`Authorization: Bearer <code>`, and `201 {"server_url", "participant_token"}`. A redeemed code opens a device
session (HttpOnly, SameSite=Strict cookie) with which the page fetches fresh tokens; the code itself works once.
The API secret stays in this process: it signs tokens and is never sent, logged or rendered.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from agent.config import Settings

from .device_tokens import device_identity, mint_device_token
from .ratelimit import FailureLimiter
from .store import AccessStore, Session, new_device_id, valid_device_id

logger = logging.getLogger(__name__)

PAGE_DIR = Path(__file__).resolve().parents[1] / "web"
LIVEKIT_CLIENT = PAGE_DIR / "node_modules" / "livekit-client" / "dist" / "livekit-client.umd.js"
SESSION_COOKIE = "voice_mcp_session"
DEVICE_COOKIE = "voice_mcp_device"
MAX_BODY = 16 * 1024
_STATIC = {"app.js": "text/javascript", "app.css": "text/css"}


def browser_livekit_url(settings: Settings) -> str:
    url = settings.web_livekit_url or settings.livekit_url
    if not url:
        raise ValueError("LIVEKIT_URL is not set")
    return url


def _content_security_policy(livekit_url: str) -> str:
    parts = urlsplit(livekit_url)
    http_scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    ws_scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    # The client talks signalling over ws(s) and calls the HTTP twin of the same address to validate.
    origins = f"{ws_scheme}://{parts.netloc} {http_scheme}://{parts.netloc}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; "
        f"connect-src 'self' {origins}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def create_web_app(settings: Settings, store: AccessStore | None = None, limiter: FailureLimiter | None = None):
    """The ASGI app. Raises ValueError when LiveKit is not configured (nothing to hand tokens out for)."""
    if not settings.livekit_configured:
        raise ValueError("LiveKit is not configured: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET")
    livekit_url = browser_livekit_url(settings)
    token = TokenEndpoint(
        settings, livekit_url, store or AccessStore.in_data_dir(settings.data_dir), limiter or FailureLimiter()
    )
    page = PageFiles(livekit_url)
    routes = [
        Route("/", page.index),
        Route("/api/token", token.handle, methods=["POST"]),
        Route("/vendor/livekit-client.umd.js", page.livekit_client),
        Route("/healthz", _health),
        Route("/{name}", page.static),
    ]
    return Starlette(routes=routes)


def _refuse(status: int, error: str, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message}, status, headers={"Cache-Control": "no-store", **headers})


class TokenEndpoint:
    """`POST /api/token`: an access code (once) or a device session's cookie in, a LiveKit token out."""

    def __init__(self, settings: Settings, livekit_url: str, store: AccessStore, limiter: FailureLimiter) -> None:
        self._settings = settings
        self._livekit_url = livekit_url
        self._store = store
        self._limiter = limiter

    async def handle(self, request: Request) -> Response:
        client = request.client.host if request.client else "unknown"
        wait = self._limiter.blocked(client)
        if wait is not None:
            return _refuse(
                429, "rate_limited", "too many failed attempts; wait a minute", **{"Retry-After": str(int(wait) + 1)}
            )
        origin = request.headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
            return _refuse(403, "forbidden_origin", "token requests come from this service's own page only")
        body = await _json_body(request)
        if body is None:
            return _refuse(400, "bad_request", f"send a JSON object of at most {MAX_BODY} bytes")
        credential = self._device(request, client)
        if isinstance(credential, Response):
            return credential
        device, new_session = credential
        name = body.get("participant_name")
        return self._issue(request, device, new_session, name if isinstance(name, str) else None)

    def _device(self, request: Request, client: str) -> tuple[str, Session | None] | Response:
        """The device this request speaks for, and the session a redeemed code opened; or the refusal."""
        authorization = request.headers.get("authorization", "")
        code = authorization[7:].strip() if authorization.lower().startswith("bearer ") else ""
        session_secret = request.cookies.get(SESSION_COOKIE)
        known_device = request.cookies.get(DEVICE_COOKIE)
        if code:
            failure = self._store.redeem_code(code)
            if failure is not None:
                self._limiter.failed(client)
                why = {
                    "unknown": "this access code is not valid",
                    "used": "this access code was already used; create a new link",
                    "expired": "this access code has expired; create a new link",
                }[failure]
                logger.info("token refused: code %s (client %s)", failure, client)
                return _refuse(401, f"code_{failure}", why)
            device = known_device if valid_device_id(known_device) else new_device_id()
            return device, self._store.open_session(device)
        if session_secret:
            session_device = self._store.session_device(session_secret)
            if session_device is None:
                self._limiter.failed(client)
                return _refuse(401, "session_ended", "this device's session has ended; open a new join link")
            return session_device, None
        # no credential at all guesses nothing: the page's first visit on a new device is one of these
        return _refuse(401, "code_missing", "send the access code from the join link as Authorization: Bearer")

    def _issue(self, request: Request, device: str, new_session: Session | None, name: str | None) -> Response:
        """The token for `device`; a new session's cookies go with it."""
        jwt = mint_device_token(self._settings, device, name)
        response = JSONResponse({"server_url": self._livekit_url, "participant_token": jwt}, 201)
        response.headers["Cache-Control"] = "no-store"
        if new_session is not None:
            secure = request.url.scheme == "https"
            response.set_cookie(
                SESSION_COOKIE, new_session.secret, max_age=int(new_session.expires_at - time.time()), path="/api/",
                httponly=True, samesite="strict", secure=secure,
            )
            response.set_cookie(
                DEVICE_COOKIE, device, max_age=365 * 24 * 3600, path="/api/",
                httponly=True, samesite="strict", secure=secure,
            )
        logger.info("token issued to %s (%s)", device_identity(device), "new session" if new_session else "session")
        return response


class PageFiles:
    """The page, its own static files and the livekit-client bundle, with the page's security headers."""

    def __init__(self, livekit_url: str) -> None:
        self._headers = {
            "Cache-Control": "no-store",
            "Content-Security-Policy": _content_security_policy(livekit_url),
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
            "Permissions-Policy": "microphone=(self), camera=()",
        }

    async def index(self, request: Request) -> Response:
        return FileResponse(PAGE_DIR / "index.html", media_type="text/html", headers=self._headers)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return Response("not found", 404)
        return FileResponse(PAGE_DIR / name, media_type=_STATIC[name], headers=self._headers)

    async def livekit_client(self, request: Request) -> Response:
        if not LIVEKIT_CLIENT.exists():
            return Response(
                f"livekit-client is not installed at {LIVEKIT_CLIENT}: run scripts/setup (npm ci in mcp_bridge/web)",
                503,
            )
        return FileResponse(
            LIVEKIT_CLIENT, media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
        )


async def _health(request: Request) -> Response:
    return JSONResponse({"ok": True}, headers={"Cache-Control": "no-store"})


async def _json_body(request: Request) -> dict[str, Any] | None:
    chunks = bytearray()
    async for chunk in request.stream():
        chunks += chunk
        if len(chunks) > MAX_BODY:
            return None
    if not chunks.strip():
        return {}
    try:
        body = json.loads(chunks)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def missing_page_assets() -> list[str]:
    return [str(p) for p in (PAGE_DIR / "index.html", LIVEKIT_CLIENT) if not p.exists()]


async def serve_web(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    app = create_web_app(settings)
    # No access log: it would record `?code=` query strings. Our own lines never carry a secret.
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level="warning", server_header=False)
    await uvicorn.Server(config).serve()
