"""The microphone audio of one conversation, addressable by audio time, and salvaging a reply as a WAV file.

voice-mcp records nothing by default. The one exception is a reply that was heard but could not be turned into text
(STT failed, or the microphone died in the middle of it): that audio is saved so the user's words are not lost, and
the error names the file. Such files are private (0600 in a 0700 directory), go to `<data_dir>/recordings` or, when
that cannot be written, to a private directory under the system temp dir, and are deleted after
`VOICE_MCP_KEEP_FAILED_AUDIO_DAYS` days (0: nothing is saved, so such a reply is lost).
"""

from __future__ import annotations

import bisect
import datetime as dt
import logging
import os
import stat
import tempfile
import time
import wave
from pathlib import Path

import numpy as np

from .microphone import MicFrame

log = logging.getLogger(__name__)

SALVAGE_PREFIX = "reply"


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
    """Write mono int16 `samples` to a new, uniquely named WAV file (mode 0600) in `directory`; returns its path."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = directory / f"{prefix}-{stamp}.wav"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle, wave.open(handle, "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(sample_rate)
            out.writeframes(np.ascontiguousarray(samples, dtype=np.int16).tobytes())
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def fallback_dir() -> Path:
    """The private temp directory salvaged replies go to when the data dir cannot be written."""
    owner = os.getuid() if hasattr(os, "getuid") else os.getlogin()
    return Path(tempfile.gettempdir()) / f"voice-mcp-{owner}" / "recordings"


def salvage_dirs(preferred: Path) -> list[Path]:
    return [preferred, fallback_dir()]


def save_failed_reply(samples: np.ndarray, sample_rate: int, preferred: Path, keep_days: float) -> Path | None:
    """Save a reply that could not be transcribed; its path, or None when `keep_days` is 0 (nothing may be kept).

    Tries `preferred`, then the private temp directory. Raises `OSError` (naming both) when neither can be written.
    """
    if keep_days <= 0:
        return None
    problems = []
    for directory in salvage_dirs(preferred):
        try:
            _make_private_dir(directory)
            prune(directory, keep_days)
            return save_wav(samples, sample_rate, directory, SALVAGE_PREFIX)
        except OSError as exc:
            log.warning("could not save the reply in %s: %s", directory, exc)
            problems.append(f"{directory}: {exc}")
    raise OSError("; ".join(problems))


def prune_failed_replies(preferred: Path, keep_days: float) -> None:
    """Delete salvaged replies older than `keep_days` days (all of them for 0) in both places."""
    for directory in salvage_dirs(preferred):
        try:
            prune(directory, keep_days)
        except OSError as exc:
            log.debug("could not prune %s: %s", directory, exc)


def prune(directory: Path, keep_days: float) -> int:
    """Delete `reply-*.wav` files in `directory` older than `keep_days` days; returns how many."""
    if not directory.is_dir():
        return 0
    oldest = time.time() - keep_days * 86400
    removed = 0
    for path in directory.glob(f"{SALVAGE_PREFIX}-*.wav"):
        try:
            if keep_days <= 0 or path.lstat().st_mtime < oldest:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue
    return removed


def _make_private_dir(directory: Path) -> None:
    """Create `directory` (0700) or check an existing one is ours and private; `OSError` otherwise."""
    directory.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        directory.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(f"{directory} is not a directory")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise PermissionError(f"{directory} belongs to another user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(directory, 0o700)  # ours, made before replies were private: tighten it
