"""Small tools for the LiveKit tests: event queues, bounded waits and a test tone."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
from livekit import rtc

WAIT = 20.0  # seconds: generous, the machines running these are small and shared


class Events:
    """Collects the arguments of one event of an ``rtc.Room`` (or any emitter) in a queue."""

    def __init__(self, emitter: Any, event: str) -> None:
        self._queue: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        emitter.on(event, lambda *args: self._queue.put_nowait(args))

    async def next(self, within: float = WAIT) -> tuple[Any, ...]:
        return await asyncio.wait_for(self._queue.get(), within)

    async def first(self, match: Callable[..., bool], within: float = WAIT) -> tuple[Any, ...]:
        """The first event (from now on, or queued) whose arguments satisfy ``match``."""
        async with asyncio.timeout(within):
            while True:
                args = await self._queue.get()
                if match(*args):
                    return args

    def pending(self) -> int:
        return self._queue.qsize()


async def eventually(check: Callable[[], Any], within: float = WAIT, interval: float = 0.1) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy; return that."""
    async with asyncio.timeout(within):
        while True:
            result = check()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return result
            await asyncio.sleep(interval)


SAMPLE_RATE = 48000
FRAME = 480  # 10 ms


async def play_tone(source: rtc.AudioSource, frequency: float, stop: asyncio.Event, amplitude: float = 0.5) -> None:
    """Feed a sine into ``source`` in 10 ms frames until ``stop`` is set."""
    t = 0
    while not stop.is_set():
        n = np.arange(t, t + FRAME)
        samples = (amplitude * np.sin(2 * np.pi * frequency * n / SAMPLE_RATE) * 32767).astype(np.int16)
        t += FRAME
        await source.capture_frame(rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, FRAME))


async def record(track: rtc.Track, seconds: float) -> np.ndarray:
    """``seconds`` of mono 48 kHz audio received on ``track``, as float samples in [-1, 1]."""
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    chunks: list[np.ndarray] = []
    wanted = int(seconds * SAMPLE_RATE)
    try:
        async for event in stream:
            chunks.append(np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64) / 32768)
            if sum(len(c) for c in chunks) >= wanted:
                break
    finally:
        await stream.aclose()
    return np.concatenate(chunks)[:wanted]


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[np.argmax(spectrum)])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples**2)))


def to_48k(frame: rtc.AudioFrame) -> np.ndarray:
    """A mono frame of any rate as 48 kHz int16 samples (what a microphone track carries)."""
    resampler = rtc.AudioResampler(
        frame.sample_rate, SAMPLE_RATE, num_channels=1, quality=rtc.AudioResamplerQuality.VERY_HIGH
    )
    out = [*resampler.push(frame), *resampler.flush()]
    return np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out])


async def play_samples(
    source: rtc.AudioSource, samples: np.ndarray, stop: asyncio.Event, sent: asyncio.Event | None = None
) -> None:
    """Feed 48 kHz int16 ``samples`` into ``source`` in 10 ms frames, set ``sent``, then feed silence until
    ``stop`` is set."""
    silence = np.zeros(FRAME, dtype=np.int16)
    for start in range(0, samples.size, FRAME):
        chunk = samples[start : start + FRAME]
        chunk = np.concatenate([chunk, silence[: FRAME - chunk.size]])
        await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), SAMPLE_RATE, 1, FRAME))
    if sent is not None:
        sent.set()
    while not stop.is_set():
        await source.capture_frame(rtc.AudioFrame(silence.tobytes(), SAMPLE_RATE, 1, FRAME))


async def record_until_quiet(track: rtc.Track, sent: asyncio.Event, within: float, quiet: float = 1.5) -> np.ndarray:
    """Mono 48 kHz audio received on ``track`` (float samples in [-1, 1]) from now until ``sent`` is set and
    the last ``quiet`` seconds were silent, so that everything sent arrives however late it runs; at most
    ``within`` seconds."""
    stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1)
    chunks: list[np.ndarray] = []
    quiet_samples = int(quiet * SAMPLE_RATE)
    silent_run = 0  # samples received since the last chunk that was not silent
    try:
        async with asyncio.timeout(within):
            async for event in stream:
                chunk = np.frombuffer(event.frame.data, dtype=np.int16).astype(np.float64) / 32768
                chunks.append(chunk)
                silent_run = silent_run + chunk.size if rms(chunk) < SILENCE_RMS else 0
                if sent.is_set() and silent_run >= quiet_samples:
                    break
    finally:
        await stream.aclose()
    return np.concatenate(chunks)


SILENCE_RMS = 0.003  # about -50 dBFS: what counts as silence in received audio
