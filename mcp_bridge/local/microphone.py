"""The microphone: a sounddevice input stream delivering cleaned 10 ms frames to asyncio.

PortAudio calls `_callback` on its own thread with exactly 10 ms of audio; the frame goes through the echo
canceller there and is handed to the event loop with `call_soon_threadsafe`. Every frame carries its position on
the microphone's own clock (`MicFrame.time`, seconds of audio since the stream started) and the wall-clock moment
it arrived, so listening decisions are made in audio time and reported in wall time.

A device that fails to open, reports an error, or stops delivering audio (no callback for `stall_timeout` seconds;
the first audio may take `start_timeout`) makes `read()` raise `AudioDeviceError` instead of waiting forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from livekit import rtc

from mcp_bridge.converse_types import AudioDeviceError

from . import devices
from .device_stream import DeviceStream
from .devices import Device
from .echo import EchoCanceller, stream_time

log = logging.getLogger(__name__)

PREFERRED_RATES = (16000, 48000, 32000, 24000, 44100)


@dataclass(frozen=True)
class MicFrame:
    frame: rtc.AudioFrame
    time: float
    """Start of this frame in seconds of microphone audio since the stream started."""
    wall: float
    """`time.perf_counter()` when the frame arrived."""


class Microphone(DeviceStream):
    role = "microphone"
    preferred_rates = PREFERRED_RATES

    def __init__(
        self,
        device: Device,
        *,
        echo: EchoCanceller | None = None,
        stall_timeout: float = 3.0,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(device)
        self._echo = echo
        self._stall_timeout = stall_timeout
        self._start_timeout = start_timeout
        self._queue: asyncio.Queue[MicFrame] = asyncio.Queue()
        self._samples = 0
        self._error: AudioDeviceError | None = None

    @property
    def audio_time(self) -> float:
        """Seconds of audio delivered so far."""
        return self._samples / self.sample_rate if self.sample_rate else 0.0

    def _create_stream(self, sd: Any) -> Any:
        return sd.InputStream(
            device=self.device.index,
            samplerate=self.sample_rate,
            channels=1,
            dtype="int16",
            blocksize=self.sample_rate // 100,
            callback=self._callback,
            finished_callback=self._finished,
        )

    def _callback(self, indata: np.ndarray, frames: int, times: Any, status: Any) -> None:
        now = time.perf_counter()
        self._last_callback = now
        if status and status.input_overflow:
            log.debug("microphone overflow: %s", status)
        frame = rtc.AudioFrame(bytearray(indata[:, 0].tobytes()), self.sample_rate, 1, frames)
        if self._echo is not None:
            try:
                self._echo.set_input_delay(times.currentTime - times.inputBufferAdcTime)
            except Exception:
                pass
            self._echo.process_capture(frame, stream_time(times, "inputBufferAdcTime"))
        mic_frame = MicFrame(frame, self._samples / self.sample_rate, now)
        self._samples += frames
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._queue.put_nowait, mic_frame)
            except RuntimeError:  # loop closed between the check and the call
                pass

    def _finished(self) -> None:
        if not self._closing:
            self._fail("the audio stream ended unexpectedly")

    def _fail(self, problem: str) -> None:
        if self._error is None:
            self._error = devices.failed_in_use(self.device, problem)
            loop = self._loop
            if loop is not None and not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(lambda: None)  # wake the loop; read() polls the error
                except RuntimeError:
                    pass

    def _check_health(self) -> None:
        if self._error is not None:
            raise self._error
        now = time.perf_counter()
        if self._last_callback == 0.0:
            if now - self._opened_at > self._start_timeout:
                self._fail(f"no audio arrived within {self._start_timeout:.0f} s of opening it")
        elif now - self._last_callback > self._stall_timeout:
            self._fail(f"no audio for {now - self._last_callback:.1f} s")
        if self._error is not None:
            raise self._error

    async def read(self) -> MicFrame:
        """The next frame. Raises `AudioDeviceError` when the device failed or stalled."""
        while True:
            self._check_health()
            if self._stream is None:
                raise devices.failed_in_use(self.device, "the microphone is not open")
            try:
                async with asyncio.timeout(0.25):  # not wait_for: in 3.11 it can swallow a cancellation
                    return await self._queue.get()
            except TimeoutError:
                continue

    async def aclose(self) -> None:
        await self._close_stream()

