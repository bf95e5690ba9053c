"""End of turn by the Smart Turn model, through the virtual microphone: thinking pauses are waited out, complete
replies end at once, and a missing or failing model falls back to the silence rule with a warning.

No wall-clock limits are asserted: `ended_by` says which rule ended the turn.
"""

from __future__ import annotations

import asyncio
import importlib.resources
from pathlib import Path

import numpy as np
import pytest
from livekit.agents import vad as lk_vad

from agent.speech import FasterWhisperSTT, PiperTTS
from agent.speech.turn_model import TurnModel
from mcp_bridge.converse_types import ConverseRequest, ConverseResult, ListenOptions, Stage
from mcp_bridge.local import LocalTransport
from tests.audio.pulse import VirtualAudio

from .conftest import RATE, Progress, SpeakPcm, make_settings, wer

pytestmark = pytest.mark.audio

BOUND = 180.0
HEAD = "I think the best option is, um,"
TAIL = "the configuration file."
COMPLETE = "Please open the configuration file."
PAUSE_SECONDS = 1.5
LONG_BOUND_MS = 8000


async def pause_reply(speak_pcm: SpeakPcm) -> np.ndarray:
    """The user starts, says "um", thinks for 1.5 s, and finishes the sentence."""
    head, tail = await speak_pcm(HEAD), await speak_pcm(TAIL)
    return np.concatenate([head, np.zeros(int(PAUSE_SECONDS * RATE), dtype=np.int16), tail])


async def exchange(transport: LocalTransport, audio: VirtualAudio, reply: np.ndarray) -> ConverseResult:
    progress = Progress()

    async def answer() -> None:
        await progress.reached(Stage.LISTENING).wait()
        await asyncio.sleep(0.5)
        await asyncio.to_thread(audio.play_into_mic, reply)

    feeder = asyncio.create_task(answer())
    request = ConverseRequest(message="Which one?", listen=ListenOptions(max_seconds=30, min_seconds=0.5))
    try:
        return await asyncio.wait_for(transport.converse(request, progress), BOUND)
    finally:
        await asyncio.wait_for(feeder, BOUND)


def make_transport(tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, vad: lk_vad.VAD, **settings: object
                   ) -> LocalTransport:
    options: dict[str, object] = {"data_dir": tmp_path, "silence_ms": 800, "listen_min": 0.5} | settings
    return LocalTransport(make_settings(**options), stt=whisper, tts=piper, vad=vad)


async def test_the_model_judges_a_trailing_um_unfinished(speak_pcm: SpeakPcm) -> None:
    model = await TurnModel.load()
    try:
        silence = np.zeros(RATE // 4, dtype=np.int16)
        unfinished = await model.end_of_turn_probability(np.concatenate([await speak_pcm(HEAD), silence]))
        finished = await model.end_of_turn_probability(np.concatenate([await speak_pcm(COMPLETE), silence]))
    finally:
        await model.aclose()
    assert unfinished < model.threshold <= finished, (unfinished, finished)


async def test_a_reply_with_a_thinking_pause_comes_back_whole(
    tmp_path: Path, virtual_audio: VirtualAudio, speak_pcm: SpeakPcm, whisper: FasterWhisperSTT, piper: PiperTTS,
    shared_vad: lk_vad.VAD,
) -> None:
    # a long bound: on a busy 2-core machine one decision can take most of a second, and the model is asked every
    # 0.5 s of silence; the default 3 s bound would race those decisions instead of testing them
    transport = make_transport(tmp_path, whisper, piper, shared_vad, max_turn_silence_ms=LONG_BOUND_MS)
    try:
        result = await exchange(transport, virtual_audio, await pause_reply(speak_pcm))
        health = await transport.health()
    finally:
        await transport.aclose()
    assert "configuration" in result.text.lower(), result.text
    assert wer(f"{HEAD} {TAIL}", result.text) <= 0.3, result.text
    assert result.ended_by == "model"  # the finished sentence, not the long bound, ended the turn
    assert "Smart Turn" in health.detail and "warning" not in health.detail


async def test_the_silence_rule_cuts_the_same_reply_at_the_pause(
    tmp_path: Path, virtual_audio: VirtualAudio, speak_pcm: SpeakPcm, whisper: FasterWhisperSTT, piper: PiperTTS,
    shared_vad: lk_vad.VAD,
) -> None:
    transport = make_transport(tmp_path, whisper, piper, shared_vad, turn_detection="silence")
    try:
        result = await exchange(transport, virtual_audio, await pause_reply(speak_pcm))
        health = await transport.health()
    finally:
        await transport.aclose()
    assert result.ended_by == "silence"
    assert "configuration" not in result.text.lower(), result.text
    assert "VOICE_MCP_TURN_DETECTION=silence" in health.detail


async def test_a_missing_model_falls_back_to_silence_with_a_warning(
    tmp_path: Path, virtual_audio: VirtualAudio, speak_pcm: SpeakPcm, whisper: FasterWhisperSTT, piper: PiperTTS,
    shared_vad: lk_vad.VAD,
) -> None:
    transport = make_transport(tmp_path, whisper, piper, shared_vad, turn_model=str(tmp_path / "missing.onnx"))
    try:
        before = await transport.health()
        result = await exchange(transport, virtual_audio, await speak_pcm(COMPLETE))
        after = await transport.health()
    finally:
        await transport.aclose()
    assert before.available and "warning" in before.detail and "missing.onnx" in before.detail
    assert result.heard_speech and wer(COMPLETE, result.text) <= 0.2, result.text
    assert result.ended_by == "silence"
    assert "warning" in after.detail


async def test_a_failing_model_falls_back_to_silence_with_a_warning(
    tmp_path: Path, virtual_audio: VirtualAudio, speak_pcm: SpeakPcm, whisper: FasterWhisperSTT, piper: PiperTTS,
    shared_vad: lk_vad.VAD,
) -> None:
    # a real ONNX model that loads but is not a turn model: every decision fails inside onnxruntime
    wrong = importlib.resources.files("livekit.plugins.silero") / "resources" / "silero_vad.onnx"
    transport = make_transport(tmp_path, whisper, piper, shared_vad, turn_model=str(wrong))
    try:
        first = await exchange(transport, virtual_audio, await speak_pcm(COMPLETE))
        health = await transport.health()
        second = await exchange(transport, virtual_audio, await speak_pcm(COMPLETE))
    finally:
        await transport.aclose()
    for result in (first, second):
        assert result.heard_speech and wer(COMPLETE, result.text) <= 0.2, result.text
        assert result.ended_by == "silence"
    assert "warning" in health.detail and "failed" in health.detail
