"""Fixtures of the web service tests: `voice-mcp web` started for each test with its own data dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from .service import SECRET, WebService, service_env, start_web, stop


@pytest.fixture
async def web_service(tmp_path: Path) -> AsyncIterator[WebService]:
    env = service_env(tmp_path, "ws://127.0.0.1:7880", "webkey", SECRET, "voice-mcp")
    process, service = await start_web(env, tmp_path)
    try:
        yield service
    finally:
        await stop(process)
