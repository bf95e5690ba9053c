"""One user, several devices: the session hears exactly one of them, the one that spoke last.

`DeviceAudioInput` is the session's audio input (in place of RoomIO's, which follows one participant). It reads
the microphone track of every user device in the room, forwards the frames of the *active* device only, and
watches the others' audio level. A device whose level stays above `SPEECH_LEVEL_DBFS` for `SPEECH_FRAMES`
frames is reported through `on_speech`; when the linker then makes it active, its last `PRE_ROLL_SECONDS` of
audio go to the session first, so the words that made it active are not lost.

The level is measured here rather than taken from the server's active-speaker updates: those come every few
hundred milliseconds, and every frame before the switch would be gone; the loopback test server does not send
them either. Decoding a second microphone costs about as much as RoomIO's own stream does for the first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

import numpy as np
from livekit import rtc
from livekit.agents.voice.io import AudioInput

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000  # what Silero and Whisper use: the native side resamples 48 -> 16 kHz once (issue 13)
FRAME_MS = 50  # as RoomIO's input: mono in 50 ms frames
# No gain control here (RoomIO applies WebRTC's AGC by default): the user's client already levels the microphone
# (getUserMedia's autoGainControl), and an APM pass per frame was main-thread work in every room (issue 13)
SPEECH_LEVEL_DBFS = -42.0
SPEECH_FRAMES = 3
"""Consecutive loud 50 ms frames (150 ms) that count as a device starting to speak."""
PRE_ROLL_SECONDS = 0.6
QUEUE_LIMIT = 400
"""Chunks (20 s) held for a session that is not reading; older ones are dropped with a warning."""


def level_dbfs(samples: np.ndarray) -> float:
    if samples.size == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples.astype(np.float32)))))
    return 20 * np.log10(max(rms, 1e-3) / 32768.0)


class _Device:
    def __init__(self, identity: str, track_sid: str = "", stream: rtc.AudioStream | None = None) -> None:
        self.identity = identity
        self.track_sid = track_sid
        self.stream = stream
        self.pre_roll: deque[rtc.AudioFrame] = deque(maxlen=round(PRE_ROLL_SECONDS * 1000 / FRAME_MS))
        self.loud_chunks = 0
        self.task: asyncio.Task[None] | None = None


class DeviceAudioInput(AudioInput):
    def __init__(
        self,
        room: rtc.Room,
        *,
        is_device: Callable[[rtc.RemoteParticipant], bool],
        on_speech: Callable[[str], None],
        quiet: Callable[[], bool] = lambda: False,
    ) -> None:
        """`is_device`: which participants are the user's devices. `on_speech(identity)`: a device that is not
        active started speaking. `quiet()`: True while other devices' sound must not count (the agent speaking:
        its voice from one device's speaker reaches the other's microphone)."""
        super().__init__(label="voice-mcp devices")
        self._room = room
        self._is_device = is_device
        self._on_speech = on_speech
        self._quiet = quiet
        self._devices: dict[str, _Device] = {}
        self._queue: asyncio.Queue[rtc.AudioFrame] = asyncio.Queue()
        self._active: str | None = None
        self._attached = True
        self._closed = False
        self._closing: set[asyncio.Task[None]] = set()
        self.dropped_chunks = 0

    @property
    def active(self) -> str | None:
        return self._active

    # --- AudioInput ---------------------------------------------------------------------------------------------
    async def __anext__(self) -> rtc.AudioFrame:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        return await self._queue.get()

    def on_attached(self) -> None:
        self._attached = True

    def on_detached(self) -> None:
        self._attached = False

    # --- devices ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._room.on("track_subscribed", self._on_track_subscribed)
        self._room.on("track_unsubscribed", self._on_track_gone)
        self._room.on("participant_disconnected", self._on_participant_gone)
        for participant in self._room.remote_participants.values():
            for publication in participant.track_publications.values():
                if publication.track is not None:
                    self._on_track_subscribed(publication.track, publication, participant)  # type: ignore[arg-type]

    def set_active(self, identity: str | None) -> None:
        """Hear `identity` from now on (None: nobody), starting with its pre-roll."""
        if identity == self._active:
            return
        self._active = identity
        device = self._devices.get(identity) if identity is not None else None
        if device is not None:
            while device.pre_roll:
                self._push(device.pre_roll.popleft())
            device.loud_chunks = 0
        logger.info("hearing device %s", identity)

    def _on_track_subscribed(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if (
            self._closed
            or not isinstance(track, rtc.RemoteAudioTrack)
            or publication.source != rtc.TrackSource.SOURCE_MICROPHONE
            or not self._is_device(participant)
        ):
            return
        old = self._devices.pop(participant.identity, None)
        if old is not None:
            self._stop(old)
        stream = rtc.AudioStream(track, sample_rate=SAMPLE_RATE, num_channels=1, frame_size_ms=FRAME_MS)
        device = _Device(participant.identity, track.sid, stream)
        device.task = asyncio.get_running_loop().create_task(
            self._read(device), name=f"voice-mcp.device.{device.identity}"
        )
        self._devices[participant.identity] = device

    def _on_track_gone(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        device = self._devices.get(participant.identity)
        if device is not None and device.track_sid == publication.sid:
            self._stop(self._devices.pop(participant.identity))

    def _on_participant_gone(self, participant: rtc.RemoteParticipant) -> None:
        device = self._devices.pop(participant.identity, None)
        if device is not None:
            self._stop(device)

    def _stop(self, device: _Device) -> None:
        if device.task is not None:
            device.task.cancel()
        if device.stream is not None:
            closing = asyncio.get_running_loop().create_task(device.stream.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    async def _read(self, device: _Device) -> None:
        assert device.stream is not None
        async for event in device.stream:
            self.frame_arrived(device.identity, event.frame)

    def frame_arrived(self, identity: str, frame: rtc.AudioFrame) -> None:
        """One 50 ms frame from a device's microphone: to the session if it is the active one, else watched."""
        device = self._devices.get(identity)
        if device is None:
            device = self._devices[identity] = _Device(identity)
        if identity == self._active:
            self._push(frame)
        else:
            self._watch(device, frame)

    def _watch(self, device: _Device, chunk: rtc.AudioFrame) -> None:
        if self._quiet():
            device.pre_roll.clear()  # the agent's own voice through another device: never replayed as the user
            device.loud_chunks = 0
            return
        device.pre_roll.append(chunk)
        loud = level_dbfs(np.frombuffer(chunk.data, dtype=np.int16)) >= SPEECH_LEVEL_DBFS
        device.loud_chunks = device.loud_chunks + 1 if loud else 0
        if device.loud_chunks >= SPEECH_FRAMES:
            device.loud_chunks = 0
            self._on_speech(device.identity)  # may make it active, which flushes the pre-roll

    def _push(self, chunk: rtc.AudioFrame) -> None:
        if not self._attached:
            return  # like RoomIO: a detached input drops audio instead of piling it up
        if self._queue.qsize() >= QUEUE_LIMIT:
            self._queue.get_nowait()
            self.dropped_chunks += 1
            if self.dropped_chunks % 100 == 1:
                logger.warning("the session is not reading audio; %d chunks dropped", self.dropped_chunks)
        self._queue.put_nowait(chunk)

    async def aclose(self) -> None:
        self._closed = True
        self._room.off("track_subscribed", self._on_track_subscribed)
        self._room.off("track_unsubscribed", self._on_track_gone)
        self._room.off("participant_disconnected", self._on_participant_gone)
        for device in list(self._devices.values()):
            if device.task is not None:
                device.task.cancel()
            if device.stream is not None:
                with contextlib.suppress(Exception):
                    await device.stream.aclose()
        self._devices.clear()
