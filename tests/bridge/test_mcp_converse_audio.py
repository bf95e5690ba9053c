"""The product's first promise, end to end: a real MCP client spawns `python -m mcp_bridge` over stdio and calls
`converse`; the server speaks through the (virtual) speaker and hears the (virtual) microphone."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from mcp import Client, StdioServerParameters

from agent.speech import FasterWhisperSTT, PiperTTS
from agent.speech.audio import resample_int16
from tests.audio.pulse import VirtualAudio
from tests.transcripts import wer

pytestmark = pytest.mark.audio

MESSAGE = "Hello from your assistant. What should we work on next?"
REPLY = "Let us fix the failing test in the parser module."


async def pcm16k(tts: PiperTTS, text: str) -> np.ndarray:
    frame = await tts.synthesize(text).collect()
    return resample_int16(np.frombuffer(frame.data, dtype=np.int16), frame.sample_rate, 16000)


async def transcribe(stt: FasterWhisperSTT, pcm: np.ndarray) -> str:
    event = await stt.recognize([rtc.AudioFrame(pcm.astype(np.int16).tobytes(), 16000, 1, pcm.size)])
    return event.alternatives[0].text


def server(virtual_audio: VirtualAudio, data_dir: Path) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    env |= virtual_audio.env | {"VOICE_MCP_DATA_DIR": str(data_dir), "VOICE_MCP_SILENCE_MS": "800"}
    return StdioServerParameters(command=sys.executable, args=["-m", "mcp_bridge"], env=env, cwd=str(data_dir))


async def test_converse_over_stdio_speaks_and_returns_the_spoken_reply(
    virtual_audio: VirtualAudio, tmp_path: Path
) -> None:
    stt, tts = FasterWhisperSTT(), PiperTTS()
    reply = await pcm16k(tts, REPLY)
    stages: list[str] = []
    listening = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        stages.append((message or "").split(":")[0])
        if (message or "").startswith("listening"):
            listening.set()

    async def answer_when_listening() -> None:
        await listening.wait()
        await asyncio.sleep(0.5)  # a user answering right after the listening cue
        await asyncio.to_thread(virtual_audio.play_into_mic, reply)

    with virtual_audio.record_speaker() as speaker:
        async with Client(server(virtual_audio, tmp_path), read_timeout_seconds=240) as client:
            answering = asyncio.create_task(answer_when_listening())
            result = await client.call_tool(
                "converse",
                {"message": MESSAGE, "listen_duration_max": 40, "listen_duration_min": 0.5},
                progress_callback=on_progress,
            )
            await asyncio.wait_for(answering, timeout=60)
        played = speaker.stop()

    assert not result.is_error, result.content
    content = result.structured_content or {}
    assert content["transport"] == "local"
    assert content["heard_speech"] is True
    assert wer(REPLY, content["text"]) <= 0.15, content["text"]
    timings = content["timings"]
    assert timings["first_audio_ms"] > 0 and timings["total_ms"] >= timings["first_audio_ms"]
    assert timings["end_of_speech_to_result_ms"] is not None
    assert stages[:3] == ["speaking", "listening", "transcribing"]

    heard = await transcribe(stt, played)
    assert wer(MESSAGE, heard) <= 0.25, heard  # the message, through the speaker and back through Whisper

    log = (tmp_path / "exchanges.jsonl").read_text()
    assert '"transport": "local"' in log and "parser" not in log  # timings logged, the user's words never
