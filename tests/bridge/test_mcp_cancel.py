"""Cancelling `converse` over stdio at every stage must leave the server alive with no audio stream open, and
closing the session while the models still load must end the process cleanly.

A real MCP client spawns `python -m mcp_bridge`; the server speaks through the private PulseAudio's virtual speaker
and hears its virtual microphone. The STT is a real OpenAI-compatible server on loopback (backed by faster-whisper
in this process) that can be held, as a stalled server is, so a call is reliably caught while transcribing.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mcp import Client, StdioServerParameters

from agent.speech import FasterWhisperSTT, PiperTTS
from mcp_bridge.exchange_log import read_entries
from tests.audio.pulse import VirtualAudio
from tests.speech.openai_compatible_server import OpenAICompatibleServer
from tests.transcripts import wer

from .test_mcp_converse_audio import pcm16k

pytestmark = [pytest.mark.audio, pytest.mark.timeout(900)]

MESSAGE = (
    "Here is a longer message, so that there is time to interrupt it. I will describe the plan for today in some "
    "detail. First we review the failing tests, then we fix the parser, and finally we write the release notes."
)
REPLY = "Let us start with the parser module and leave the notes for later."
FINAL_REPLY = "Please run the whole test suite again."
STAGES = ("speaking", "listening", "transcribing")
ROUNDS = 2
BOUND = 120.0


def server_params(virtual_audio: VirtualAudio, data_dir: Path, stt_url: str) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    env |= virtual_audio.env | {
        "VOICE_MCP_DATA_DIR": str(data_dir),
        "VOICE_MCP_SILENCE_MS": "800",
        "VOICE_MCP_STT": stt_url,
        "VOICE_MCP_PROVIDER_TIMEOUT": "60",  # a held STT request is the stage being cancelled, not a failure
    }
    return StdioServerParameters(command=sys.executable, args=["-m", "mcp_bridge"], env=env, cwd=str(data_dir))


def server_pid() -> int:
    """The `python -m mcp_bridge` child of this test process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and b"mcp_bridge" in cmdline:
            return int(entry.name)
    raise AssertionError("the MCP server process was not found")


def open_streams(virtual_audio: VirtualAudio, pid: int) -> list[str]:
    """The PulseAudio playback and capture streams the process `pid` holds (`pactl list sink-inputs` and
    `source-outputs`)."""
    held = []
    for kind, marker in (("sink-inputs", "Sink Input #"), ("source-outputs", "Source Output #")):
        for block in virtual_audio.pactl("list", kind).split(marker)[1:]:
            if f'application.process.id = "{pid}"' in block:
                held.append(f"{kind} #{block.split()[0]}")
    return held


async def no_streams_left(virtual_audio: VirtualAudio, pid: int) -> list[str]:
    """Waits (bounded) until the server has closed its streams; returns what is still open."""
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        held = await asyncio.to_thread(open_streams, virtual_audio, pid)
        if not held or asyncio.get_running_loop().time() > deadline:
            return held
        await asyncio.sleep(0.2)


async def test_cancelling_at_every_stage_closes_the_streams_and_the_next_call_works(
    virtual_audio: VirtualAudio, tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS
) -> None:
    reply = await pcm16k(piper, REPLY)
    final_reply = await pcm16k(piper, FINAL_REPLY)
    cancelled_at: list[str] = []
    async with OpenAICompatibleServer(stt=whisper) as stt_server:
        params = server_params(virtual_audio, tmp_path, stt_server.base_url)
        async with Client(params, read_timeout_seconds=BOUND * 3) as client:
            pid = server_pid()
            for _ in range(ROUNDS):
                for stage in STAGES:
                    await cancel_at(client, stage, virtual_audio, stt_server, reply)
                    cancelled_at.append(stage)
                    held = await no_streams_left(virtual_audio, pid)
                    assert not held, f"streams still open after cancelling while {stage}: {held}"

            stt_server.hold, stt_server.fail_with = None, None
            listening = asyncio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                if (message or "").startswith("listening"):
                    listening.set()

            async def answer() -> None:
                await listening.wait()
                await asyncio.to_thread(virtual_audio.play_into_mic, final_reply)

            answering = asyncio.create_task(answer())
            result = await asyncio.wait_for(
                client.call_tool(
                    "converse", {"message": "Anything else?", "listen_duration_min": 0.5},
                    progress_callback=on_progress,
                ),
                BOUND * 2,
            )
            await asyncio.wait_for(answering, BOUND)
            assert not result.is_error, result.content
            assert wer(FINAL_REPLY, (result.structured_content or {})["text"]) <= 0.2, result.structured_content
            assert server_pid() == pid  # the same process served every call
        assert not await no_streams_left(virtual_audio, pid)

    assert cancelled_at == list(STAGES) * ROUNDS
    entries = read_entries(tmp_path / "exchanges.jsonl")
    codes = [e["error"]["code"] for e in entries if not e["ok"]]
    assert codes == ["cancelled"] * len(cancelled_at), codes
    assert entries[-1]["ok"] is True


async def cancel_at(
    client: Client, stage: str, virtual_audio: VirtualAudio, stt_server: OpenAICompatibleServer, reply: np.ndarray
) -> None:
    """Start a converse call and cancel it (client-side, which sends notifications/cancelled) once it is in
    `stage`: speaking (sound is coming out), listening, or transcribing (the STT request is held)."""
    reached = {s: asyncio.Event() for s in STAGES}

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        name = (message or "").split(":")[0]
        if name in reached:
            reached[name].set()

    stt_server.hold, stt_server.fail_with = (asyncio.Event() if stage == "transcribing" else None), None
    with virtual_audio.record_speaker() as speaker:
        call = asyncio.create_task(
            client.call_tool(
                "converse", {"message": MESSAGE, "listen_duration_min": 0.5, "listen_duration_max": 60},
                progress_callback=on_progress,
            )
        )
        try:
            if stage == "speaking":
                await asyncio.wait_for(reached["speaking"].wait(), BOUND)
                assert await asyncio.to_thread(speaker.wait_for_sound, BOUND), "the message was never heard"
            elif stage == "listening":
                await asyncio.wait_for(reached["listening"].wait(), BOUND)
            else:
                await asyncio.wait_for(reached["listening"].wait(), BOUND)
                await asyncio.to_thread(virtual_audio.play_into_mic, reply)
                await asyncio.wait_for(reached["transcribing"].wait(), BOUND)  # the STT cannot answer: held
            assert not call.done(), f"the call ended before it could be cancelled while {stage}"
        finally:
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            if stt_server.hold is not None:  # what the cancelled call asked is answered with an error, at once
                stt_server.fail_with = 503
                stt_server.hold.set()


SHUTDOWN_SCRIPT_DELAYS = (0.0, 1.0)


@pytest.mark.parametrize("delay", SHUTDOWN_SCRIPT_DELAYS)
def test_closing_the_session_while_models_load_exits_cleanly(tmp_path: Path, delay: float) -> None:
    """The client initialises and hangs up at once, while the prewarm threads are still loading Whisper and Piper:
    the server must wait for them and exit 0, not abort ('terminate called without an active exception')."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    env["VOICE_MCP_DATA_DIR"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcp_bridge"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env, cwd=tmp_path,
    )
    assert proc.stdin is not None and proc.stdout is not None
    initialize = {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    proc.stdin.write((json.dumps(initialize) + "\n").encode())
    proc.stdin.flush()
    answer = json.loads(proc.stdout.readline())
    assert answer["id"] == 1 and "result" in answer
    proc.stdin.write(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}\n')
    proc.stdin.flush()
    if delay:
        time.sleep(delay)  # a client that hangs up a moment later, models still loading
    proc.stdin.close()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    assert b"terminate called" not in stderr
