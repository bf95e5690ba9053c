"""Turning a recorded reply into text with the shared STT (any `livekit.agents.stt.STT`).

Audio is handed over at 16 kHz mono (what Whisper-family models expect). Each call is bounded in time, so a stuck
provider cannot hang the conversation; a failure is raised as `SttFailure` and the caller decides what to do with
the audio (the listener saves it and raises `TranscriptionFailed`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import numpy as np
from livekit import rtc
from livekit.agents import NOT_GIVEN
from livekit.agents import stt as lk_stt

log = logging.getLogger(__name__)

STT_RATE = 16000


class SttFailure(Exception):
    """The STT provider failed or timed out on a clip."""


@dataclass(frozen=True)
class Transcript:
    text: str
    stt_ms: float
    audio_seconds: float


def to_stt_frame(samples: np.ndarray, sample_rate: int) -> rtc.AudioFrame:
    frame = rtc.AudioFrame(np.ascontiguousarray(samples, dtype=np.int16).tobytes(), sample_rate, 1, samples.size)
    if sample_rate == STT_RATE or samples.size == 0:
        return frame
    resampler = rtc.AudioResampler(sample_rate, STT_RATE)
    frames = [*resampler.push(frame), *resampler.flush()]
    return rtc.combine_audio_frames(frames) if frames else rtc.AudioFrame(b"", STT_RATE, 1, 0)


class Transcriber:
    def __init__(self, stt: lk_stt.STT, *, language: str | None = None, provider_timeout: float = 10.0) -> None:
        """`language`: None asks in the STT's own language (where per-call options set it)."""
        self.stt = stt
        self.language = language
        self.provider_timeout = provider_timeout

    def timeout_for(self, audio_seconds: float) -> float:
        """Generous bound: local models on a busy CPU can take a few times real time."""
        return self.provider_timeout * 3 + audio_seconds * 3

    async def transcribe(self, samples: np.ndarray, sample_rate: int) -> Transcript:
        audio_seconds = samples.size / sample_rate if sample_rate else 0.0
        frame = to_stt_frame(samples, sample_rate)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_for(audio_seconds)):
                event = await self.stt.recognize([frame], language=self.language or NOT_GIVEN)
        except TimeoutError:
            raise SttFailure(f"speech recognition took longer than {self.timeout_for(audio_seconds):.0f} s") from None
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("speech recognition failed: %s", exc, exc_info=log.isEnabledFor(logging.DEBUG))
            raise SttFailure(f"speech recognition failed: {exc}") from exc
        stt_ms = (time.perf_counter() - started) * 1000
        text = " ".join(alt.text.strip() for alt in event.alternatives[:1]).strip()
        return Transcript(text=text, stt_ms=stt_ms, audio_seconds=audio_seconds)
