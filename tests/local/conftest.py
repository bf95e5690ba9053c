"""Fixtures for the local-loop tests: the shared speech providers (loaded once) and a LocalTransport on the
private PulseAudio of `tests.audio.pulse`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import vad as lk_vad

from agent.config import Settings
from agent.speech import FasterWhisperSTT, PiperTTS, build_vad
from agent.speech.audio import resample_int16
from mcp_bridge.converse_types import Stage
from mcp_bridge.local import LocalTransport
from tests.audio.pulse import VirtualAudio
from tests.speech_fixtures import clean_settings as make_settings
from tests.transcripts import wer as wer

RATE = 16000








def frame_to_pcm16k(frame: rtc.AudioFrame) -> np.ndarray:
    samples = np.frombuffer(frame.data, dtype=np.int16)
    return resample_int16(samples, frame.sample_rate, RATE)


def voiced_seconds(pcm: np.ndarray, rate: int = RATE, level: float = 500.0) -> float:
    """Seconds of 10 ms blocks louder than `level` RMS."""
    block = rate // 100
    n = pcm.size // block
    if n == 0:
        return 0.0
    blocks = pcm[: n * block].astype(np.float32).reshape(n, block)
    rms = np.sqrt((blocks**2).mean(axis=1))
    return float((rms > level).sum()) / 100




@pytest.fixture(scope="session")
def shared_vad() -> lk_vad.VAD:
    return build_vad(make_settings())


SpeakPcm = Callable[[str], Awaitable[np.ndarray]]


@pytest.fixture(scope="session")
def speak_pcm(piper: PiperTTS) -> SpeakPcm:
    """`await speak_pcm(text)` → int16 mono 16 kHz of the bundled Piper voice saying it (cached)."""
    cache: dict[str, np.ndarray] = {}

    async def speak(text: str) -> np.ndarray:
        if text not in cache:
            frame = await piper.synthesize(text).collect()
            cache[text] = frame_to_pcm16k(frame)
        return cache[text]

    return speak


@pytest.fixture
def settings(tmp_path: object, virtual_audio: VirtualAudio) -> Settings:
    return make_settings(data_dir=tmp_path, silence_ms=800, listen_min=0.5)


@pytest.fixture
async def transport(
    settings: Settings, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD
) -> AsyncIterator[LocalTransport]:
    t = LocalTransport(settings, stt=whisper, tts=piper, vad=shared_vad)
    yield t
    await t.aclose()


class Progress:
    """Records progress reports; `reached(stage)` is an asyncio.Event."""

    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self._events: dict[Stage, asyncio.Event] = {s: asyncio.Event() for s in Stage}

    async def __call__(self, stage: Stage, message: str) -> None:
        self.stages.append(stage)
        self._events[stage].set()

    def reached(self, stage: Stage) -> asyncio.Event:
        return self._events[stage]


@pytest.fixture
def progress() -> Progress:
    return Progress()
