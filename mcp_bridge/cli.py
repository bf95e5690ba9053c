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

from .models import RequestedTransport, Stage, VoiceError

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

    server = create_server(settings)
    if http:
        server.run("streamable-http", host=host, port=port)
    else:
        server.run("stdio")
    return 0


async def _converse(settings: Settings, args: argparse.Namespace) -> int:
    from .models import build_request
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
