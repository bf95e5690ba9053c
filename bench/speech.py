"""The embedded speech models for the benchmarks, the synthesised user replies, and part (d): real-time factors.

Replies are spoken by the bundled Piper voice (so WER has an exact reference) and resampled to 16 kHz mono int16.
`Reply.voiced_end` is where the last voiced 10 ms block ends (RMS above `VOICED_LEVEL`): the end of the user's
speech that every end-of-speech latency is measured from.

Real-time factor = processing seconds / audio seconds (below 1 is faster than real time):
- STT: `FasterWhisperSTT.transcribe` of each whole reply (Whisper tiny.en, int8, beam 5, CPU);
- TTS: Piper synthesising each reply text completely (`synthesize(text).collect()`).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import jiwer
import numpy as np

from agent.speech import FasterWhisperSTT, PiperTTS
from agent.speech.audio import resample_int16

from .harness import Measurement

RATE = 16000
VOICED_LEVEL = 300.0
"""int16 RMS of a 10 ms block above which it counts as voiced (Piper's pauses are digital silence)."""

REPLY_TEXTS: dict[int, list[str]] = {
    1: ["Yes, go ahead.", "No, not yet.", "Sounds good to me."],
    3: [
        "Please open the configuration file and check the port number.",
        "Run the tests again and tell me which of them are failing now.",
        "Deploy the release to staging, then wait for my review.",
    ],
    8: [
        "Keep the old database schema for now, because the migration script has not been tested on real data, "
        "and the nightly backup is still running on the main server.",
        "Start with the login page, then fix the broken links in the footer, and after that update the "
        "screenshots in the user guide so that they match the new design.",
        "Before you merge the branch, rebase it on main, run the full test suite twice, and write a short "
        "summary of the changes for the release notes that go out on Friday.",
    ],
}
"""Replies by target length in seconds (Piper's actual voiced length is in each row's notes)."""


@dataclass(frozen=True)
class Reply:
    text: str
    pcm: np.ndarray
    """int16 mono 16 kHz."""
    voiced_start: float
    voiced_end: float

    @property
    def seconds(self) -> float:
        return self.pcm.size / RATE

    @property
    def voiced_seconds(self) -> float:
        return self.voiced_end - self.voiced_start


def voiced_bounds(pcm: np.ndarray, rate: int = RATE, level: float = VOICED_LEVEL) -> tuple[float, float]:
    """(start, end) in seconds of the first and last voiced 10 ms block; (0, 0) when nothing is voiced."""
    block = rate // 100
    n = pcm.size // block
    if n == 0:
        return 0.0, 0.0
    blocks = pcm[: n * block].astype(np.float32).reshape(n, block)
    loud = np.nonzero(np.sqrt((blocks**2).mean(axis=1)) > level)[0]
    if loud.size == 0:
        return 0.0, 0.0
    return float(loud[0]) / 100, float(loud[-1] + 1) / 100


def first_loud_sample(pcm: np.ndarray, level: int = 1000) -> int | None:
    """Index of the first sample whose magnitude exceeds `level`."""
    idx = np.nonzero(np.abs(pcm.astype(np.int32)) > level)[0]
    return int(idx[0]) if idx.size else None


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(normalise(reference), normalise(hypothesis) or "<empty>"))


class Speech:
    """The bundled models, loaded once, and the replies they speak (cached)."""

    def __init__(self) -> None:
        self.stt = FasterWhisperSTT()
        self.tts = PiperTTS()
        self._replies: dict[str, Reply] = {}

    async def load(self) -> None:
        await self.stt.load()
        await self.tts.load()

    async def synthesize(self, text: str) -> tuple[np.ndarray, float]:
        """(int16 16 kHz samples, seconds Piper took)."""
        started = time.perf_counter()
        frame = await self.tts.synthesize(text).collect()
        took = time.perf_counter() - started
        samples = np.frombuffer(frame.data, dtype=np.int16)
        return resample_int16(samples, frame.sample_rate, RATE), took

    async def reply(self, text: str) -> Reply:
        if text not in self._replies:
            pcm, _ = await self.synthesize(text)
            start, end = voiced_bounds(pcm)
            self._replies[text] = Reply(text, pcm, start, end)
        return self._replies[text]

    async def replies(self, seconds: int, count: int) -> list[Reply]:
        """`count` replies of about `seconds`, cycling through the texts of that length."""
        texts = REPLY_TEXTS[seconds]
        return [await self.reply(texts[i % len(texts)]) for i in range(count)]


async def run_rtf(speech: Speech, *, iterations: int) -> list[Measurement]:
    """(d) STT and TTS real-time factors over every reply text, `iterations` rounds."""
    stt_rtf: dict[int, list[float]] = {s: [] for s in REPLY_TEXTS}
    tts_rtf: dict[int, list[float]] = {s: [] for s in REPLY_TEXTS}
    errors: dict[int, list[float]] = {s: [] for s in REPLY_TEXTS}
    for _ in range(iterations):
        for seconds, texts in REPLY_TEXTS.items():
            for text in texts:
                pcm, took = await speech.synthesize(text)
                tts_rtf[seconds].append(took / (pcm.size / RATE))
                reply = await speech.reply(text)
                audio = reply.pcm.astype(np.float32) / 32768.0
                started = time.perf_counter()
                transcript = await speech.stt.transcribe(audio)
                stt_rtf[seconds].append((time.perf_counter() - started) / reply.seconds)
                errors[seconds].append(wer(text, transcript.text))
    rows: list[Measurement] = []
    for seconds in REPLY_TEXTS:
        rows.append(
            Measurement.of(
                f"stt_rtf_{seconds}s",
                "x",
                stt_rtf[seconds],
                f"faster-whisper tiny.en int8 beam 5, whole ~{seconds} s reply (processing s / audio s); "
                f"WER {np.mean(errors[seconds]):.3f}",
            )
        )
    for seconds in REPLY_TEXTS:
        rows.append(
            Measurement.of(
                f"tts_rtf_{seconds}s",
                "x",
                tts_rtf[seconds],
                f"Piper en_US-joe-medium, whole ~{seconds} s reply text (processing s / audio s)",
            )
        )
    return rows
