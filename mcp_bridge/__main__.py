"""`python -m mcp_bridge`: the same command line as `voice-mcp` (serves MCP on stdio by default)."""

from .cli import main

raise SystemExit(main())
