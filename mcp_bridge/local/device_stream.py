"""What the microphone and the speaker share: one PortAudio stream, opened with a bound and closed without hanging.

Opening can block inside the audio driver, so it runs in a thread under `OPEN_TIMEOUT`: a wedged device becomes an
`AudioDeviceError`, not a hang (if the driver answers later, the late stream is closed at once). Closing likewise
runs under `CLOSE_TIMEOUT`; a driver that never returns is left to finish on its own thread.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from . import devices
from .devices import Device

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0


class DeviceStream:
    """Base of `Microphone` and `Player`: owns one sounddevice stream on `device`."""

    role = "audio device"
    """How log messages name the device ("microphone", "speaker")."""
    preferred_rates: tuple[int, ...] = (48000,)

    def __init__(self, device: Device) -> None:
        self.device = device
        self.sample_rate = 0
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened_at = 0.0
        self._last_callback = 0.0
        self._closing = False
        self._abandoned = False

    def _create_stream(self, sd: Any) -> Any:
        """The (not yet started) sounddevice stream, at `self.sample_rate`. Called with PortAudio locked."""
        raise NotImplementedError

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                await asyncio.to_thread(self._open)
        except TimeoutError:
            self._abandoned = True  # if the driver answers later, _open closes the stream itself
            raise devices.open_failed(self.device, TimeoutError(f"no answer within {OPEN_TIMEOUT:.0f} s")) from None
        self._opened_at = time.perf_counter()

    def _open(self) -> None:
        sd = devices.sounddevice()
        with devices.portaudio_lock:
            self.sample_rate = devices.choose_samplerate(self.device, self.preferred_rates)
            try:
                stream = self._create_stream(sd)
                stream.start()
            except Exception as exc:
                raise devices.open_failed(self.device, exc) from None
            devices.stream_opened()
        if self._abandoned:
            close_stream(stream)
            devices.stream_closed()
            return
        self._stream = stream

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        self._closing = True
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.to_thread(close_stream, stream)
        except TimeoutError:
            log.warning("closing the %s %s timed out", self.role, self.device)
        devices.stream_closed()


def close_stream(stream: Any) -> None:
    """Abort and close, ignoring what a dying driver says."""
    try:
        stream.abort()
    except Exception:
        pass
    try:
        stream.close()
    except Exception:
        pass
