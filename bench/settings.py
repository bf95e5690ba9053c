"""Settings for the benchmarks: the defaults only (no .env, no VOICE_MCP_*/LIVEKIT_* from the shell)."""

from __future__ import annotations

import os

from agent.config import Settings, load_settings


def bench_settings(**overrides: object) -> Settings:
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    try:
        return load_settings(env_file=None, **overrides)
    finally:
        os.environ.update(saved)
