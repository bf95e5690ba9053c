"""`voice-mcp` command line: serve the MCP server, hold one exchange in the terminal, check the setup."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from typing import get_args

from agent.config import ConfigError, Settings, load_settings

from .converse_types import RequestedTransport, Stage, VoiceError

EXIT_CONFIG = 2
EXIT_FAILED = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-mcp",
        description="Voice conversations between an AI assistant and its user over MCP, locally or through "
        "LiveKit rooms. Configuration: VOICE_MCP_* environment variables or a .env file (see docs/configuration.md).",
    )
    parser.add_argument("--debug", action="store_true", help="debug logging (same as VOICE_MCP_DEBUG=true)")
    parser.set_defaults(http=False, host="127.0.0.1", port=8765)  # `voice-mcp` alone serves stdio
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the MCP server (the default command)")
    serve.add_argument("--http", action="store_true", help="streamable HTTP instead of stdio")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")

    converse = commands.add_parser("converse", help="speak a message, listen, print the reply")
    converse.add_argument("message", help="what to say")
    converse.add_argument("--no-wait", action="store_true", help="only speak, do not listen")
    converse.add_argument("--transport", choices=get_args(RequestedTransport), default="auto")
    converse.add_argument("--max", type=float, dest="listen_max", help="max listen seconds")
    converse.add_argument("--min", type=float, dest="listen_min", help="min listen seconds before silence ends")
    converse.add_argument("--json", action="store_true", help="print the whole result as JSON")

    link = commands.add_parser(
        "link", help="create a one-time join link for the room (printed with a QR code for a phone)"
    )
    link.add_argument("--ttl", type=float, default=600, help="seconds the link works, at most 86400 (default 600)")
    link.add_argument("--json", action="store_true", help='print {"url", "code", "expires_at"} as JSON only')
    link.add_argument("--revoke-all", action="store_true", help="end every unused code and every device session")

    web = commands.add_parser("web", help="serve the page and token service that join links open")
    web.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    web.add_argument("--port", type=int, help="port (default VOICE_MCP_WEB_PORT, 8780)")

    commands.add_parser("doctor", help="check devices, providers, models and configuration; say what to fix")

    rooms = commands.add_parser(
        "rooms", help="list the LiveKit rooms, who is in them, and the idle-cleanup setting (RoomService API)"
    )
    rooms.add_argument("--json", action="store_true", help="print the list as JSON")

    stats = commands.add_parser("stats", help="summarise the exchange log (latency percentiles, errors)")
    stats.add_argument("--chart", metavar="PNG", help="also draw the per-stage latency chart to this file")
    stats.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"voice-mcp: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.debug:
        settings.debug = True
    _configure_logging(settings)
    command = args.command or "serve"
    if command == "serve":
        return _serve(settings, http=args.http, host=args.host, port=args.port)
    if command == "converse":
        return asyncio.run(_converse(settings, args))
    if command == "link":
        return _link(settings, ttl=args.ttl, as_json=args.json, revoke_all=args.revoke_all)
    if command == "web":
        return _web(settings, host=args.host, port=args.port or settings.web_port)
    if command == "doctor":
        from .doctor import run_doctor

        return asyncio.run(run_doctor(settings))
    if command == "rooms":
        from .rooms_cli import run_rooms

        return asyncio.run(run_rooms(settings, as_json=args.json))
    if command == "stats":
        from .stats import run_stats

        return run_stats(settings, chart=args.chart, as_json=args.json)
    raise AssertionError(command)


def _configure_logging(settings: Settings) -> None:
    # stdout belongs to the MCP protocol on stdio: every log line goes to stderr.
    logging.basicConfig(
        level=settings.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not settings.debug:
        for noisy in ("livekit", "httpx", "faster_whisper"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _serve(settings: Settings, *, http: bool, host: str, port: int) -> int:
    from .server import create_server

    if not http:
        create_server(settings).run("stdio")
        return 0
    import uvicorn

    from .http_security import BearerTokenMiddleware, HttpSetupError, http_access

    try:  # before anything loads: an unsafe setup is refused at once
        access = http_access(settings, host, port)
    except HttpSetupError as exc:
        print(f"voice-mcp: [unsafe_http] {exc}", file=sys.stderr)
        return EXIT_CONFIG
    app = create_server(settings).streamable_http_app(transport_security=access.transport_security, host=host)
    if access.token:
        app = BearerTokenMiddleware(app, access.token)
    print(f"voice-mcp: MCP over HTTP at http://{host}:{port}/mcp "
          f"({'bearer token required' if access.token else 'loopback only, no token'})", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


def _link(settings: Settings, *, ttl: float, as_json: bool, revoke_all: bool) -> int:
    from .access.links import create_join_link
    from .access.store import AccessError

    if revoke_all:
        from .access.revoke import revoke_all as revoke

        revoked = asyncio.run(revoke(settings))
        print(f"voice-mcp: revoked {revoked.codes} unused code(s) and {revoked.sessions} device session(s); "
              f"removed from the room: {', '.join(revoked.removed) or 'nobody'}", file=sys.stderr)
        if revoked.room_error:
            print(f"voice-mcp: [room_unreachable] could not put devices out of the room ({revoked.room_error}); "
                  "their room tokens end within 15 minutes and cannot be renewed", file=sys.stderr)
        return 0
    try:
        link = create_join_link(settings, ttl)
    except AccessError as exc:
        print(f"voice-mcp: [{exc.code}] {exc}", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        print(json.dumps(link.as_dict()))
        return 0
    import segno

    segno.make(link.url, error="m").terminal(compact=True)
    print(f"{link.url}\ncode {link.code}, works once, until {link.expires_at}")
    if not settings.livekit_configured:
        print("voice-mcp: LiveKit is not configured yet; the page needs LIVEKIT_URL/_API_KEY/_API_SECRET",
              file=sys.stderr)
    return 0


def _web(settings: Settings, *, host: str, port: int) -> int:
    from .access.web import missing_page_assets, serve_web

    if not settings.livekit_configured:
        print("voice-mcp: [not_configured] the web page needs LiveKit: set LIVEKIT_URL, LIVEKIT_API_KEY and "
              "LIVEKIT_API_SECRET (docs/livekit.md)", file=sys.stderr)
        return EXIT_CONFIG
    if missing := missing_page_assets():
        print(f"voice-mcp: [not_installed] missing {', '.join(missing)}: run scripts/setup", file=sys.stderr)
        return EXIT_CONFIG
    print(f"voice-mcp: page and token service on http://{host}:{port}/ (room {settings.room}); "
          "`voice-mcp link` makes a join link", file=sys.stderr)
    asyncio.run(serve_web(settings, host, port))
    return 0


async def _converse(settings: Settings, args: argparse.Namespace) -> int:
    from .converse_types import build_request
    from .service import VoiceService

    try:
        request = build_request(
            settings,
            message=args.message,
            wait_for_response=not args.no_wait,
            listen_duration_max=args.listen_max,
            listen_duration_min=args.listen_min,
        )
    except ValueError as exc:
        print(f"voice-mcp: invalid argument: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except VoiceError as exc:
        print(f"voice-mcp: [{exc.code}] {exc}", file=sys.stderr)
        return EXIT_FAILED
    service = VoiceService(settings)

    async def progress(stage: Stage, text: str) -> None:
        print(f"[{stage.value}] {text}", file=sys.stderr)

    try:
        result = await service.converse(request, args.transport, progress)
    except VoiceError as exc:
        print(f"voice-mcp: [{exc.code}] {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await service.aclose()
    if args.json:
        print(json.dumps(result.model_dump(mode="json"), indent=2))
    elif result.heard_speech:
        print(result.text)
    elif request.wait_for_response:
        print("voice-mcp: no speech heard before the listen time ran out.", file=sys.stderr)
    return 0
