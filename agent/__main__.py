"""`python -m agent start|dev|console`: the voice-mcp LiveKit worker, with help text and quiet defaults of its own.

livekit-agents' `cli.run_app` is its deprecated rich CLI: it prints a deprecation banner for `dev`, logs DEBUG by
default there, lists commands we do not support (`connect`, `download-files`: our models ship in packages) and
describes none of ours. `start` and `dev` therefore go straight to the runner that livekit's own thin interface
(`python -m livekit.agents start`, driven by `lk agent`) uses; only `console`, which needs livekit's terminal UI,
still goes through the rich CLI.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence

from .config import ConfigError, Settings, load_settings

DESCRIPTION = """\
The voice-mcp LiveKit worker: joins the room it is dispatched to (the bridge, `voice-mcp serve`, dispatches it to
VOICE_MCP_ROOM), listens to the user there, speaks the assistant's messages and answers the bridge's converse
calls. Configuration: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET and the VOICE_MCP_* settings
(docs/configuration.md), from the environment or a .env file."""

COMMANDS = {
    "start": "serve rooms (production): JSON logs at INFO, one job process per room (a thread per room with "
    "VOICE_MCP_JOB_EXECUTOR=thread) and one kept warm, health check on VOICE_MCP_WORKER_PORT",
    "dev": "serve rooms with development defaults: readable logs at INFO, no warm job process, a free health port",
    "console": "talk to the worker's voice session in this terminal, on this computer's microphone and speaker "
    "(no LiveKit server needed; livekit's console UI)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m agent", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        command = commands.add_parser(name, help=help_text, description=help_text)
        command.add_argument(
            "--log-level",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            type=str.upper,
            help="log level (default INFO; DEBUG with VOICE_MCP_DEBUG=true)",
        )
        if name != "console":
            command.add_argument(
                "--log-format",
                choices=["json", "text"],
                help="log line format (default: json for start, text for dev)",
            )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"voice-mcp worker: {exc}")
    log_level = args.log_level or ("DEBUG" if settings.debug else "INFO")
    if args.command == "console":
        _console(settings, log_level)
    else:
        _serve(settings, dev=args.command == "dev", log_level=log_level, log_format=args.log_format)


def _serve(settings: Settings, *, dev: bool, log_level: str, log_format: str | None) -> None:
    from livekit.agents.cli import proto
    from livekit.agents.cli.cli import _run_worker  # what livekit's thin `start` runs; no public name for it yet

    from .worker import build_server

    colored = (log_format or ("text" if dev else "json")) == "text"
    _run_worker(
        build_server(settings),
        proto.CliArgs(log_level=log_level, log_format="colored" if colored else "json", dev=dev),
    )


def _console(settings: Settings, log_level: str) -> None:
    from livekit.agents import cli

    from .worker import build_server

    # livekit's console schedules AgentServer.aclose() on a loop that may already be gone when it exits; the
    # warning about it says nothing to a user (the process is ending either way)
    warnings.filterwarnings("ignore", message="coroutine 'AgentServer.aclose' was never awaited")
    sys.argv = [sys.argv[0], "console", "--log-level", log_level]
    cli.run_app(build_server(settings))


if __name__ == "__main__":
    main()
