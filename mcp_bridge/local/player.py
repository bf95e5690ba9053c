"""The speaker: plays audio frames through a sounddevice output stream, and can be silenced at once.

Frames of any rate are resampled (`rtc.AudioResampler`) to the device rate and queued; PortAudio's callback thread
takes 10 ms at a time, sends it to the speaker and hands the same 10 ms to the echo canceller's reverse stream (so
the microphone can subtract it). `first_audio_at` records when the first real sample left for the speaker (plus the
device's reported output latency). `stop()` drops everything queued, for barge-in.

`start()` opens the stream without starting it; `play()` starts it once the first audio is queued (enough to fill
the device's buffer: `ready_to_play`). A running
stream keeps `OUTPUT_LATENCY` of audio buffered, silence while there is nothing to say, and new audio is heard only
after that silence (~0.2 s measured through PulseAudio); a stream started with the audio already queued is heard
within ~20 ms. Each exchange opens its own player and `attach()`es its own echo canceller before the first audio.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from livekit import rtc

from . import devices
from .device_stream import DeviceStream
from .devices import Device
from .echo import EchoCanceller, stream_time

log = logging.getLogger(__name__)

PREFERRED_RATES = (48000, 24000, 44100, 32000, 16000)
OUTPUT_LATENCY = 0.15
"""Seconds of audio PortAudio keeps queued: enough that a busy CPU (speech models share it) causes no underruns;
`stop()` still silences within about this long."""
MAX_OUTPUT_LATENCY = 2.0
"""A reported output latency above this is taken as a bogus clock (counted as none)."""


class Player(DeviceStream):
    role = "speaker"
    preferred_rates = PREFERRED_RATES
    start_when_opened = False  # play() starts it with the first audio queued

    def __init__(self, device: Device, *, echo: EchoCanceller | None = None, stall_timeout: float = 3.0,
                 start_timeout: float = 10.0) -> None:
        super().__init__(device)
        self._echo = echo
        self._stall_timeout = stall_timeout
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._chunks: collections.deque[tuple[np.ndarray, bool]] = collections.deque()  # (samples, echo reference)
        self._offset = 0  # samples of _chunks[0] already played
        self._queued = 0  # samples queued and not yet played
        self._ended = False
        self._stopped = False
        self._drained = asyncio.Event()
        self._audible_until = 0.0  # perf_counter time at which the last sample of the piece leaves the speaker
        self._resamplers: dict[tuple[int, int], rtc.AudioResampler] = {}
        self._generation = 0
        self._error: str | None = None
        self._running = False
        self.first_audio_at: float | None = None
        self.played_samples = 0
        """Exchanges this player (and its stream) has served."""

    def _create_stream(self, sd: Any) -> Any:
        return sd.OutputStream(
            device=self.device.index,
            samplerate=self.sample_rate,
            channels=1,
            dtype="int16",
            blocksize=self.sample_rate // 100,
            latency=OUTPUT_LATENCY,
            callback=self._callback,
            finished_callback=self._finished,
        )

    # --- the stream -----------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def attach(self, echo: EchoCanceller | None) -> None:
        """Serve a new exchange (on the running event loop) with its own echo canceller (or none)."""
        self.stop()
        with self._lock:
            self._stopped = False
            self._ended = False
            self._audible_until = 0.0
        self._echo = echo
        self._drained = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self.first_audio_at = None
        self.played_samples = 0

    @property
    def ready_to_play(self) -> bool:
        """Enough of the piece is queued to fill the device's buffer, or all of it: a stream started now plays it
        without a gap (it takes `OUTPUT_LATENCY` of audio at once when it starts)."""
        with self._lock:
            return self._ended or self._queued >= self.sample_rate * OUTPUT_LATENCY

    async def play(self) -> None:
        """Start the stream if it is not running (call it once audio is queued: it is heard at once, not after a
        buffer of silence). Raises `AudioDeviceError`."""
        if self._running:
            return
        self._last_callback = 0.0
        self._opened_at = time.perf_counter()  # the start timeout counts from here
        # running from now: a caller cancelled while the start is under way leaves a stream that may well run
        self._running = True
        if not await self._control("start"):
            self._running = False
            raise devices.failed_in_use(self.device, "it could not be started")

    # --- feeding ------------------------------------------------------------------------------------------------

    def begin(self) -> None:
        """Start a new piece of audio (after `stop()` or a finished piece)."""
        with self._lock:
            self._stopped = False
            self._ended = False
            self._generation += 1
            self._audible_until = 0.0
        self._drained.clear()

    def push(self, frame: rtc.AudioFrame, *, echo_reference: bool = True) -> None:
        """Queue a frame (any rate, any channel count). Ignored after `stop()` until `begin()`.

        `echo_reference=False` keeps the frame out of the echo canceller's reverse stream: a soft cue need not be
        cancelled (the VAD ignores it), and telling the canceller about it makes it damp the user's first words."""
        if self._stopped:
            return
        for out in self._resample(frame):
            samples = np.frombuffer(out.data, dtype=np.int16)
            if out.num_channels > 1:
                samples = samples.reshape(-1, out.num_channels).mean(axis=1).astype(np.int16)
            if samples.size:
                with self._lock:
                    if self._stopped:
                        return
                    self._chunks.append((samples.copy(), echo_reference))
                    self._queued += samples.size

    def _resample(self, frame: rtc.AudioFrame) -> list[rtc.AudioFrame]:
        if frame.sample_rate == self.sample_rate:
            return [frame]
        key = (frame.sample_rate, frame.num_channels)
        resampler = self._resamplers.get(key)
        if resampler is None:
            resampler = rtc.AudioResampler(frame.sample_rate, self.sample_rate, num_channels=frame.num_channels)
            self._resamplers[key] = resampler
        return resampler.push(frame)

    def end(self) -> None:
        """No more audio for this piece: flush the resamplers; `wait_done()` returns once it has played."""
        for resampler in self._resamplers.values():
            for out in resampler.flush():
                self.push(out)
        self._resamplers.clear()
        with self._lock:
            self._ended = True
            empty = self._queued == 0
        if empty:
            self._drained.set()

    def stop(self) -> float:
        """Silence the speaker now (barge-in). Returns the seconds of queued audio that were dropped."""
        with self._lock:
            dropped = self._queued
            self._chunks.clear()
            self._offset = 0
            self._queued = 0
            self._stopped = True
            self._ended = True
        self._resamplers.clear()
        self._drained.set()
        return dropped / self.sample_rate if self.sample_rate else 0.0

    @property
    def stopped(self) -> bool:
        return self._stopped

    async def wait_done(self) -> None:
        """Until the current piece has played — come out of the speaker, not only been handed to the device — or was
        stopped. Raises `AudioDeviceError` if the device stalls."""
        while True:
            self._check_health()
            try:
                async with asyncio.timeout(0.25):  # not wait_for: in 3.11 it can swallow a cancellation
                    await self._drained.wait()
                break
            except TimeoutError:
                continue
        # The device's buffer still holds the end (PulseAudio: often 0.1–1 s): until then the user is still hearing
        # it, and "listening" would start before they could answer (the canceller then damps their first words).
        remaining = self._audible_until - time.perf_counter()
        if remaining > 0 and not self._stopped:
            await asyncio.sleep(min(remaining, MAX_OUTPUT_LATENCY))

    def _check_health(self) -> None:
        if self._error is None and self._running:
            now = time.perf_counter()
            if self._last_callback == 0.0:
                if now - self._opened_at > self._start_timeout:
                    self._error = f"it did not start playing within {self._start_timeout:.0f} s"
            elif now - self._last_callback > self._stall_timeout:
                self._error = f"it stopped taking audio for {now - self._last_callback:.1f} s"
        if self._error is not None:
            raise devices.failed_in_use(self.device, self._error)

    # --- PortAudio thread ---------------------------------------------------------------------------------------

    def _callback(self, outdata: np.ndarray, frames: int, times: Any, status: Any) -> None:
        now = time.perf_counter()
        self._last_callback = now
        out = outdata[:, 0]
        reference = np.zeros(frames, dtype=np.int16)  # what the echo canceller is told was played
        written = 0
        with self._lock:
            while written < frames and self._chunks:
                chunk, is_reference = self._chunks[0]
                take = min(frames - written, chunk.size - self._offset)
                out[written:written + take] = chunk[self._offset:self._offset + take]
                if is_reference:
                    reference[written:written + take] = chunk[self._offset:self._offset + take]
                written += take
                self._offset += take
                if self._offset >= chunk.size:
                    self._chunks.popleft()
                    self._offset = 0
            self._queued -= written
            finished = self._ended and self._queued == 0
            generation = self._generation
        out[written:] = 0
        dac, current = stream_time(times, "outputBufferDacTime"), stream_time(times, "currentTime")
        latency = dac - current if dac is not None and current is not None else 0.0
        latency = latency if 0.0 <= latency < MAX_OUTPUT_LATENCY else 0.0
        if written:
            self.played_samples += written
            if self.first_audio_at is None:
                self.first_audio_at = now + latency
        if finished:
            self._audible_until = now + latency + written / self.sample_rate
        echo = self._echo  # one read: attach() sets it from the event loop
        if echo is not None:
            try:
                echo.set_output_delay(latency)
            except Exception:
                pass
            step = self.sample_rate // 100
            for start in range(0, frames - step + 1, step):
                render = rtc.AudioFrame(
                    bytearray(reference[start:start + step].tobytes()), self.sample_rate, 1, step
                )
                echo.process_render(render, dac + start / self.sample_rate if dac is not None else None)
        if finished and not self._drained.is_set():
            self._notify(lambda: self._set_drained(generation))

    def _set_drained(self, generation: int) -> None:
        if generation == self._generation:
            self._drained.set()

    def _notify(self, fn: Callable[[], None]) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(fn)
            except RuntimeError:
                pass

    def _finished(self) -> None:
        if not self._closing and self._error is None:
            self._error = "the audio stream ended unexpectedly"

    async def aclose(self) -> None:
        self.stop()
        self._running = False
        await self._close_stream()
