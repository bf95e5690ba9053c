"""The microphone audio of one conversation, addressable by audio time, and saving a reply as a WAV file."""

from __future__ import annotations

import bisect
import datetime as dt
import wave
from pathlib import Path

import numpy as np

from .microphone import MicFrame


class Recording:
    """Mono int16 microphone audio with the wall-clock arrival of each frame.

    While nobody is speaking only the last `keep_seconds` are kept (enough for pre-roll), so a long wait for speech
    does not grow memory.
    """

    def __init__(self, sample_rate: int, keep_seconds: float = 5.0) -> None:
        self.sample_rate = sample_rate
        self.keep_seconds = keep_seconds
        self._chunks: list[np.ndarray] = []
        self._starts: list[float] = []  # audio time of each chunk's first sample
        self._walls: list[float] = []
        self.pinned_from: float | None = None
        """Audio before this time may not be dropped (set once speech starts)."""

    @property
    def end_time(self) -> float:
        if not self._chunks:
            return 0.0
        return self._starts[-1] + self._chunks[-1].size / self.sample_rate

    def append(self, mic: MicFrame) -> None:
        self._chunks.append(np.frombuffer(mic.frame.data, dtype=np.int16).copy())
        self._starts.append(mic.time)
        self._walls.append(mic.wall)
        self._trim()

    def _trim(self) -> None:
        horizon = self.end_time - self.keep_seconds
        if self.pinned_from is not None:
            horizon = min(horizon, self.pinned_from)
        drop = bisect.bisect_right(self._starts, horizon) - 1
        if drop > 64:  # trim in batches
            del self._chunks[:drop], self._starts[:drop], self._walls[:drop]

    def clip(self, start: float, end: float) -> np.ndarray:
        """Samples between audio times `start` and `end` (clamped to what is kept)."""
        if not self._chunks:
            return np.zeros(0, dtype=np.int16)
        first = max(0, bisect.bisect_right(self._starts, start) - 1)
        last = bisect.bisect_left(self._starts, end)
        data = np.concatenate(self._chunks[first:last]) if last > first else np.zeros(0, dtype=np.int16)
        base = self._starts[first]
        lo = max(0, round((start - base) * self.sample_rate))
        hi = max(lo, round((end - base) * self.sample_rate))
        return data[lo:hi]

    def wall_at(self, t: float) -> float | None:
        """The wall-clock (`perf_counter`) moment the audio at time `t` was captured (approximately)."""
        if not self._chunks:
            return None
        i = max(0, bisect.bisect_right(self._starts, t) - 1)
        chunk_end = self._starts[i] + self._chunks[i].size / self.sample_rate
        return self._walls[i] + (t - chunk_end)  # a chunk arrives when its last sample was captured


def save_wav(samples: np.ndarray, sample_rate: int, directory: Path, prefix: str = "reply") -> Path:
    """Write mono int16 `samples` to a new, uniquely named WAV file in `directory`; returns its path."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = directory / f"{prefix}-{stamp}.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.ascontiguousarray(samples, dtype=np.int16).tobytes())
    return path
