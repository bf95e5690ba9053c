"""The whole product over LiveKit: a real MCP client spawns `python -m mcp_bridge` over stdio and calls `converse`;
the bridge speaks through the worker into the room, a user there answers aloud, and the tool returns the reply."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import jiwer
import pytest
from mcp import Client, StdioServerParameters

from agent.speech import FasterWhisperSTT, PiperTTS

from .conftest import synthesize
from .harness import REPO, ServerProcess, TestUser, WorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]


def words(text: str) -> set[str]:
    return set(jiwer.RemovePunctuation()(text.lower()).split())


def bridge(server: ServerProcess, room: str, data_dir: Path) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    env |= {
        "LIVEKIT_URL": server.url,
        "LIVEKIT_API_KEY": server.api_key,
        "LIVEKIT_API_SECRET": server.api_secret,
        "VOICE_MCP_ROOM": room,
        "VOICE_MCP_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(REPO),
    }
    return StdioServerParameters(command=sys.executable, args=["-m", "mcp_bridge"], env=env, cwd=str(data_dir))


async def test_mcp_converse_with_transport_livekit_returns_the_users_spoken_reply(
    lk_server: ServerProcess,
    lk_worker: WorkerProcess,
    lk_room: str,
    lk_user: TestUser,
    whisper: FasterWhisperSTT,
    piper: PiperTTS,
    tmp_path: Path,
) -> None:
    listening = asyncio.Event()
    stages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        stages.append((message or "").split(":")[0])
        if (message or "").startswith("listening"):
            listening.set()

    async def answer_when_listening() -> None:
        await listening.wait()
        await lk_user.speak(await synthesize(piper, "Please run the full test suite first."))

    async with Client(bridge(lk_server, lk_room, tmp_path), read_timeout_seconds=300) as client:
        answering = asyncio.create_task(answer_when_listening())
        result = await client.call_tool(
            "converse",
            {"message": "The refactoring is done. What should I do next?", "transport": "livekit",
             "listen_duration_max": 90},
            progress_callback=on_progress,
        )
        await asyncio.wait_for(answering, 60)

    assert not result.is_error, result.content
    content = result.structured_content or {}
    assert content["transport"] == "livekit"
    assert content["heard_speech"] is True
    assert {"test", "suite"} <= words(content["text"]), content["text"]
    assert content["timings"]["first_audio_ms"] is not None
    assert "speaking" in stages and "listening" in stages
