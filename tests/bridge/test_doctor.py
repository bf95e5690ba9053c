"""`voice-mcp doctor` on the real devices (virtual PulseAudio) and the real providers."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audio.pulse import VirtualAudio

pytestmark = pytest.mark.audio


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def doctor(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "mcp_bridge", "doctor"],
        cwd=tmp_path, env=base | {"VOICE_MCP_DATA_DIR": str(tmp_path)} | env,
        capture_output=True, text=True, timeout=180,
    )


async def test_healthy_setup_says_all_set(tmp_path: Path, virtual_audio: VirtualAudio) -> None:
    done = await doctor(tmp_path, virtual_audio.env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ok  ] stt  faster-whisper" in done.stdout
    assert "[ok  ] local" in done.stdout
    assert "All set" in done.stdout


async def test_unreachable_provider_is_reported_with_a_fix_but_failover_keeps_it_working(
    tmp_path: Path, virtual_audio: VirtualAudio
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    done = await doctor(tmp_path, virtual_audio.env | {"VOICE_MCP_TTS": f"{url},piper"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"[FAIL] tts  {url}" in done.stdout
    assert "fix:" in done.stdout


async def test_no_usable_transport_fails_and_says_why(tmp_path: Path, virtual_audio: VirtualAudio) -> None:
    done = await doctor(tmp_path, virtual_audio.env | {"VOICE_MCP_INPUT_DEVICE": "no-such-microphone"})
    assert done.returncode == 1
    assert "no-such-microphone" in done.stdout
    assert "cannot hold a conversation yet: no transport works" in done.stdout
