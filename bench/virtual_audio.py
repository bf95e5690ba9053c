"""The private PulseAudio of `tests.audio.pulse` for the local-loop benchmark, and taps with wall-clock times.

- `VirtualAudioSession`: starts the server (`tests.audio.pulse`'s own start/stop), points this process's
  PortAudio at it, stops it on exit.
- `Tap`: a sounddevice input stream on any PulseAudio source (`vspeaker.monitor`: what the assistant said;
  `vmic`: what the microphone hears), keeping every 10 ms block with the `perf_counter()` moment it arrived.
  A block arrives when its last sample was captured, so sample j of a block of n arrived `(n - j) / rate` earlier.
- `play_into_mic(pcm) -> float`: starts `paplay` into the virtual microphone and returns the moment it was started:
  the playback start that end-of-speech times are computed from. The real start is a little later (process
  start-up plus the virtual device path; `calibrate_mic_path` measures it), so latencies from it are
  slight overestimates.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from mcp_bridge.local import devices
from tests.audio.pulse import VirtualAudio, start_virtual_audio, stop_virtual_audio

RATE = 16000


@contextlib.contextmanager
def _pulse_env(name: str, value: str) -> Iterator[None]:
    """libpulse reads PULSE_SINK / PULSE_SOURCE when a stream's context is created, i.e. when it is opened."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


class Tap:
    """Records a PulseAudio source (int16 mono 16 kHz) through PortAudio with arrival times."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._blocks: list[tuple[float, np.ndarray]] = []
        self._lock = threading.Lock()
        self._stream: Any = None

    def start(self) -> Tap:
        sd = devices.sounddevice()
        with _pulse_env("PULSE_SOURCE", self.source):
            stream = sd.InputStream(
                device="pulse",
                samplerate=RATE,
                channels=1,
                dtype="int16",
                blocksize=RATE // 100,
                callback=self._callback,
            )
        stream.start()
        devices.stream_opened()  # so that a device rescan elsewhere never terminates PortAudio under us
        self._stream = stream
        return self

    def _callback(self, indata: np.ndarray, frames: int, times: Any, status: Any) -> None:
        now = time.perf_counter()
        with self._lock:
            self._blocks.append((now, indata[:, 0].copy()))

    def first_loud(self, after: float, level: int = 1000) -> float | None:
        """Wall time of the first sample louder than `level` captured after `after`, or None."""
        with self._lock:
            blocks = list(self._blocks)
        for wall, block in blocks:
            if wall < after:
                continue
            idx = np.nonzero(np.abs(block.astype(np.int32)) > level)[0]
            if idx.size:
                return wall - (block.size - int(idx[0])) / RATE
        return None

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()

    def stop(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.abort()
            with contextlib.suppress(Exception):
                stream.close()
            devices.stream_closed()


class VirtualAudioSession:
    """A private PulseAudio server for this process (virtual microphone `vmic`, speaker `vspeaker`)."""

    def __init__(self) -> None:
        self.audio: VirtualAudio | None = None
        self._runtime: Path | None = None
        self._saved: dict[str, str | None] = {}
        self._players: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> VirtualAudioSession:
        for tool in ("pulseaudio", "pactl", "paplay"):
            if shutil.which(tool) is None:
                raise RuntimeError(
                    f"{tool} not found: apt-get install --no-install-recommends pulseaudio pulseaudio-utils "
                    "libasound2-plugins alsa-utils libportaudio2"
                )
        self._runtime = Path(tempfile.mkdtemp(prefix="vmcp-bench-pulse-"))
        self.audio = start_virtual_audio(self._runtime)
        self._saved = {k: os.environ.get(k) for k in self.audio.env}
        os.environ.update(self.audio.env)
        devices.sounddevice()
        self.audio.refresh_portaudio()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for proc in self._players:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
        if self.audio is not None:
            stop_virtual_audio(self.audio)
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if self.audio is not None:
            self.audio.refresh_portaudio()
        if self._runtime is not None:
            shutil.rmtree(self._runtime, ignore_errors=True)

    def play_into_mic(self, pcm: np.ndarray) -> float:
        """Start playing int16 16 kHz `pcm` into the virtual microphone; returns the start moment."""
        assert self.audio is not None
        started = time.perf_counter()
        self._players.append(self.audio.play_into_mic(pcm, RATE, wait=False))
        self._players = [p for p in self._players if p.poll() is None]
        return started

    async def calibrate_mic_path(self, rounds: int) -> list[float]:
        """Milliseconds from starting `paplay` to the first loud sample arriving at the virtual microphone."""
        tap = Tap("vmic").start()
        try:
            await asyncio.sleep(2.0)  # the first read from a new stream takes a while
            t = np.arange(RATE // 5) / RATE
            tone = (np.sin(2 * np.pi * 440 * t) * 12000).astype(np.int16)
            delays: list[float] = []
            for _ in range(rounds):
                started = self.play_into_mic(tone)
                await asyncio.sleep(0.6)
                heard = tap.first_loud(started - 0.05)
                if heard is not None:
                    delays.append((heard - started) * 1000)
            return delays
        finally:
            tap.stop()
