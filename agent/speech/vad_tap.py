"""One VAD per room: the session's own Silero stream also cuts the audio for STT.

livekit-agents runs a non-streaming STT (ours: faster-whisper, OpenAI-compatible servers) through
`stt.StreamAdapter`, which opens a second `vad.stream()` beside the one the `AgentSession` already runs on the
same audio: two Silero pipelines per room, each resampling and hopping to the thread pool for every 32 ms
window. `TappedVAD` wraps the process's VAD for one session; the session's stream of it is the only Silero
stream of the room, and every event it yields is also handed to the subscribers (`subscribe`), so the STT node
(`agent.segment_stt`) transcribes the segments the session's VAD already found (`END_OF_SPEECH` carries the
segment's audio, with its prefix padding).

A subscriber that works on a segment (the STT) can ask the session to wait for it: `hold(done)` from inside the
listener makes this `END_OF_SPEECH` reach the session only when `done` is resolved (at most `MAX_HOLD` seconds).
The session therefore never ends a turn while the transcript of its last segment is still being made (livekit
commits a turn once its endpointing delay has passed if any transcript exists, and the late words would start the
next turn). Other events reach the session behind a held one, in order; meanwhile the stream reads the VAD ahead.
When nothing in what it read says the user speaks again, the END_OF_SPEECH reaches the session dated back to the
real end of speech (its `silence_duration` covers the wait), so livekit's endpointing delay runs beside the
transcription instead of after it: the turn ends at the end of speech plus the delay, or when the transcript is
out if that is later, as in the local loop. When the user did speak again during the wait (a START_OF_SPEECH, or
Silero already hearing speech), the event is not dated back: the session counts its delay from now and gets the
START_OF_SPEECH right behind it, so a user who resumed during the transcription is not cut off.

Tune the wrapped VAD (`inner`, e.g. with `agent.speech.tune_vad`): Silero's options belong to the VAD object and
all its streams; the worker runs one room per job process, so that is one room's VAD.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace

from livekit import rtc
from livekit.agents import vad

from ..turn_stages import TurnStages

logger = logging.getLogger(__name__)

VADListener = Callable[[vad.VADEvent], None]

MAX_HOLD = 15.0
"""Seconds an END_OF_SPEECH waits at most for its segment's transcript before the session gets it anyway: only a
safety net, above the providers' own timeout (`VOICE_MCP_PROVIDER_TIMEOUT`, 10 s), after which the STT fails and
releases the hold itself. On a healthy machine the hold lasts as long as Whisper on one segment (~0.3 s)."""


class TappedVAD(vad.VAD):
    """`vad.VAD` for one session: streams of the wrapped VAD whose events are also published to subscribers."""

    def __init__(self, inner: vad.VAD) -> None:
        super().__init__(capabilities=inner.capabilities)
        self._inner = inner
        self._listeners: list[VADListener] = []
        self._holds: list[asyncio.Future[None]] = []
        self.stages = TurnStages()
        """When the current turn's last segment passed each stage (`agent.turn_stages`)."""

    @property
    def inner(self) -> vad.VAD:
        return self._inner

    @property
    def model(self) -> str:
        return self._inner.model

    @property
    def provider(self) -> str:
        return self._inner.provider

    @property
    def min_silence_duration(self) -> float | None:
        """livekit checks this against a streaming turn detector's needs (the silence that closes a segment)."""
        return getattr(self._inner, "min_silence_duration", None)

    def stream(self) -> TappedVADStream:
        return TappedVADStream(self, self._inner.stream())

    def subscribe(self, listener: VADListener) -> Callable[[], None]:
        """Call `listener` with every event of this session's VAD streams; returns the unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def hold(self, done: asyncio.Future[None]) -> None:
        """From a listener, for the END_OF_SPEECH being published: deliver it only once `done` is resolved."""
        self._holds.append(done)

    def _take_holds(self) -> list[asyncio.Future[None]]:
        holds, self._holds = self._holds, []
        return holds

    def _publish(self, event: vad.VADEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("VAD event listener failed")


class TappedVADStream(vad.VADStream):
    """A stream of the wrapped VAD, passed through without another task or channel hop per frame (a reader task
    exists only while an END_OF_SPEECH is held, to read ahead)."""

    def __init__(self, tapped: TappedVAD, inner: vad.VADStream) -> None:
        super().__init__(tapped)
        self._tapped = tapped
        self._inner = inner
        self._ahead: deque[_Read | None] = deque()
        """Events read while an END_OF_SPEECH was held, in order (None: the wrapped stream ended)."""
        self._reader: asyncio.Task[_Read | None] | None = None

    async def _main_task(self) -> None:
        return None  # the wrapped stream does the work; this base-class task has nothing to do

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._inner.push_frame(frame)

    def flush(self) -> None:
        self._inner.flush()

    def end_input(self) -> None:
        self._inner.end_input()

    async def __anext__(self) -> vad.VADEvent:
        read = await self._next()
        if read is None:
            raise StopAsyncIteration
        event = read.event
        if event.type != vad.VADEventType.END_OF_SPEECH:
            return event
        resumed = await self._hold(read.holds) if read.holds else False
        if not resumed:
            # dated back: the session counts its endpointing delay from the real end of speech, so that delay
            # runs beside the transcription instead of after it
            silence = max(0.0, time.time() - read.speech_ended - event.inference_duration)
            event = replace(event, silence_duration=silence)
        self._tapped.stages.session_told = time.time()
        return event

    async def _next(self) -> _Read | None:
        if self._ahead:
            return self._ahead.popleft()
        if self._reader is not None:  # a read started during a hold: its event is the next one
            read = await asyncio.shield(self._reader)
            self._reader = None
            return read
        return await self._read()

    async def _read(self) -> _Read | None:
        try:
            event = await self._inner.__anext__()
        except StopAsyncIteration:
            return None
        speech_ended = time.time() - event.silence_duration - event.inference_duration
        if event.type == vad.VADEventType.END_OF_SPEECH:
            self._tapped.stages.segment_ended(speech_ended)
        self._tapped._publish(event)
        holds = self._tapped._take_holds() if event.type == vad.VADEventType.END_OF_SPEECH else []
        return _Read(event, holds, speech_ended)

    async def _hold(self, holds: list[asyncio.Future[None]]) -> bool:
        """Wait until the held segment's transcript is out (at most `MAX_HOLD`), reading the VAD ahead meanwhile.
        True when the user started speaking again during the wait: the END_OF_SPEECH then reaches the session as
        of now (not dated back), and the START_OF_SPEECH read ahead right behind it keeps the turn open."""
        waiting = asyncio.ensure_future(asyncio.wait(holds, timeout=MAX_HOLD))
        resumed = False
        ended = any(read is None for read in self._ahead)
        try:
            while not waiting.done():
                if ended:
                    await waiting
                    break
                if self._reader is None:
                    self._reader = asyncio.create_task(self._read(), name="voice-mcp.vad-read-ahead")
                done, _ = await asyncio.wait({waiting, self._reader}, return_when=asyncio.FIRST_COMPLETED)
                if self._reader in done:
                    read = self._reader.result()
                    self._reader = None
                    self._ahead.append(read)
                    ended = read is None
                    resumed = resumed or (read is not None and _speech_again(read.event))
        finally:
            if not waiting.done():
                waiting.cancel()
        if not waiting.cancelled():
            _, pending = waiting.result()
            if pending:
                logger.warning("a speech segment's transcript took over %.0f s; the turn may end without it", MAX_HOLD)
        return resumed

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        await self._inner.aclose()
        await super().aclose()


@dataclass
class _Read:
    event: vad.VADEvent
    holds: list[asyncio.Future[None]]
    speech_ended: float
    """When the event dates the end of speech (unix seconds; meaningful for END_OF_SPEECH)."""


def _speech_again(event: vad.VADEvent) -> bool:
    """The user is speaking again: a new segment starts, or Silero already heard speech (its earliest sign)."""
    if event.type == vad.VADEventType.START_OF_SPEECH:
        return True
    return event.type == vad.VADEventType.INFERENCE_DONE and getattr(event, "raw_accumulated_speech", 0.0) > 0.0
