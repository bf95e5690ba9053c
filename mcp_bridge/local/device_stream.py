"""What the microphone and the speaker share: one PortAudio stream, opened with a bound and closed without hanging.

Opening can block inside the audio driver, so it runs in a thread under `OPEN_TIMEOUT`: a wedged device becomes an
`AudioDeviceError`, not a hang (if the driver answers late, or the call was cancelled meanwhile, the late stream is
closed at once). Closing likewise runs under `CLOSE_TIMEOUT`; a driver that never returns is left to finish on its
own thread.

Closing is cancellation-proof: the close runs on its own thread, which also does the open-stream bookkeeping
(`devices.stream_closed`) once PortAudio has really let go of the stream. A cancelled caller stops waiting, never
the close: a stream that is neither closed nor referenced would be freed while PortAudio still calls into it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import devices
from .devices import Device

log = logging.getLogger(__name__)

OPEN_TIMEOUT = 15.0
CLOSE_TIMEOUT = 5.0
CONTROL_TIMEOUT = 3.0
"""Seconds starting or stopping an open stream may take before it counts as failed."""


class DeviceStream:
    """Base of `Microphone` and `Player`: owns one sounddevice stream on `device`."""

    role = "audio device"
    """How log messages name the device ("microphone", "speaker")."""
    preferred_rates: tuple[int, ...] = (48000,)
    start_when_opened = True
    """Start the stream as soon as it is open (the microphone). The player starts its own when it has audio."""

    def __init__(self, device: Device) -> None:
        self.device = device
        self.sample_rate = 0
        self._stream: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._opened_at = 0.0
        self._last_callback = 0.0
        self._closing = False
        self._abandoned = False
        self._state_lock = threading.Lock()  # _open (a thread) and start/close (the loop) decide who owns a stream
        self._control_lock = threading.Lock()
        """Held by the thread that starts, stops or closes the stream: PortAudio must never do two at once on it.
        One per stream: a new stream gets a new lock, so a thread wedged on a dead one cannot block it."""

    def _create_stream(self, sd: Any) -> Any:
        """The (not yet started) sounddevice stream, at `self.sample_rate`. Called with PortAudio locked."""
        raise NotImplementedError

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                await asyncio.to_thread(self._open)
        except TimeoutError:
            self._abandon()  # if the driver answers later, _open closes the stream itself
            raise devices.open_failed(self.device, TimeoutError(f"no answer within {OPEN_TIMEOUT:.0f} s")) from None
        except asyncio.CancelledError:
            self._abandon()  # the opening thread goes on; whatever it opens is closed, by it or by aclose()
            raise
        self._opened_at = time.perf_counter()

    def _abandon(self) -> None:
        with self._state_lock:
            self._abandoned = True

    def _open(self) -> None:
        sd = devices.sounddevice()
        with devices.portaudio_lock:
            self.sample_rate = devices.choose_samplerate(self.device, self.preferred_rates)
            try:
                stream = self._create_stream(sd)
                if self.start_when_opened:
                    stream.start()
            except Exception as exc:
                raise devices.open_failed(self.device, exc) from None
            devices.stream_opened()
        with self._state_lock:
            if not self._abandoned:
                self._stream = stream
                self._control_lock = threading.Lock()
                return
        close_and_count(stream)

    async def _control(self, action: str) -> bool:
        """`stream.start()` or `stream.abort()` on a thread, bounded; False when there is no stream or the call failed
        or timed out. Like a close, the call is not interrupted by a cancelled caller, and it never runs beside a
        close: a stream closed meanwhile is left alone."""
        with self._state_lock:
            stream, control = self._stream, self._control_lock
        if stream is None:
            return False

        def run() -> None:
            with control:
                if self._stream is not stream:  # closed (or being closed) meanwhile
                    raise RuntimeError("the stream was closed")
                getattr(stream, action)()

        call = on_daemon_thread(run, f"voice-mcp-{self.role}-{action}")
        _closing.add(call)
        call.add_done_callback(_settled)
        try:
            async with asyncio.timeout(CONTROL_TIMEOUT):
                await asyncio.shield(call)
        except TimeoutError:
            log.warning("the %s %s did not %s within %.0f s", self.role, self.device, action, CONTROL_TIMEOUT)
            return False
        except Exception as exc:
            log.info("the %s %s could not %s: %s", self.role, self.device, action, exc)
            return False
        return True

    async def _close_stream(self, *, wait: bool = True) -> None:
        """Close the stream (`wait=False`: let it close on its own thread, as for one that is known to be dead)."""
        with self._state_lock:
            stream, self._stream = self._stream, None
            control = self._control_lock
            self._abandoned = True  # a stream still being opened is closed by its opening thread
        if stream is None:
            return
        self._closing = True
        closing = on_daemon_thread(lambda: close_and_count(stream, control), f"voice-mcp-{self.role}-close")
        _closing.add(closing)
        closing.add_done_callback(_settled)
        if not wait:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(closing)  # a cancelled caller stops waiting; the close goes on
        except TimeoutError:
            log.warning("closing the %s %s timed out", self.role, self.device)


_closing: set[asyncio.Future[None]] = set()
"""Closes, starts and stops in progress (a reference, so none is garbage-collected before its thread has finished)."""


def on_daemon_thread(work: Callable[[], None], name: str) -> asyncio.Future[None]:
    """Run `work` on a daemon thread of its own; the future is done when it returns. Not `asyncio.to_thread`: a
    driver that never returns would then keep the interpreter from exiting (its executor's threads are joined)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def report(error: BaseException | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def run() -> None:
        error: BaseException | None = None
        try:
            work()
        except BaseException as exc:
            error = exc
        try:
            loop.call_soon_threadsafe(report, error)
        except RuntimeError:  # the loop is gone: nobody waits any more
            pass

    threading.Thread(target=run, name=name, daemon=True).start()
    return done


def _settled(call: asyncio.Future[None]) -> None:
    _closing.discard(call)
    if not call.cancelled():
        call.exception()  # reported by the caller that waited; retrieved here for one that stopped waiting


def close_and_count(stream: Any, control: threading.Lock | None = None) -> None:
    """Close `stream` (once no other thread starts or stops it) and only then count it closed (PortAudio may be
    re-initialised once none is open)."""
    try:
        if control is None:
            close_stream(stream)
        else:
            with control:
                close_stream(stream)
    finally:
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
