"""`python -m agent start|dev|console|connect|download-files`: the voice-mcp LiveKit worker (livekit-agents CLI)."""

from __future__ import annotations

import sys

from livekit.agents import cli

from .config import ConfigError, load_settings
from .worker import build_server


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"voice-mcp worker: {exc}")
    cli.run_app(build_server(settings))


if __name__ == "__main__":
    main()
