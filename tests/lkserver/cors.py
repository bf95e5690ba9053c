"""CORS for every HTTP endpoint, as the real LiveKit server answers browsers.

livekit-server wraps its whole mux (``/rtc/validate``, ``/rtc/v1/validate``, Twirp, ``/``) in a CORS
middleware that allows any origin (tokens, not origins, guard it), any request header and the
default methods GET, POST and HEAD. A browser page served from another origin (the project's web
page) therefore reads ``/rtc[/v1]/validate`` when its websocket fails, and may call Twirp.

Here: a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered
204 with the origin, the method and the requested headers reflected; every other response to a
request that carries ``Origin`` gets ``Access-Control-Allow-Origin: <origin>`` and ``Vary: Origin``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web

ALLOWED_METHODS = frozenset({"GET", "POST", "HEAD"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_preflight(request: web.Request) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


def _add_vary(response: web.StreamResponse, *names: str) -> None:
    present = {v.strip().lower() for v in response.headers.get(hdrs.VARY, "").split(",") if v.strip()}
    missing = [n for n in names if n.lower() not in present]
    if missing:
        response.headers[hdrs.VARY] = ", ".join(filter(None, [response.headers.get(hdrs.VARY, ""), *missing]))


@web.middleware
async def preflight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights before routing (the routes accept only GET or POST)."""
    if not _is_preflight(request):
        return await handler(request)
    response = web.Response(status=204)
    _add_vary(response, "Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers")
    method = request.headers[hdrs.ACCESS_CONTROL_REQUEST_METHOD].upper()
    if method not in ALLOWED_METHODS:
        return response  # no CORS headers: the browser refuses the actual request
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = request.headers[hdrs.ORIGIN]
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_METHODS] = method
    requested_headers = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "").strip()
    if requested_headers:
        response.headers[hdrs.ACCESS_CONTROL_ALLOW_HEADERS] = requested_headers
    return response


async def add_allow_origin(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: every response, errors included, allows the caller's origin."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or _is_preflight(request):
        return
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
    _add_vary(response, "Origin")


def install(app: web.Application) -> None:
    app.middlewares.append(preflight_middleware)
    app.on_response_prepare.append(add_allow_origin)
