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
next turn). Other events wait behind a held one, in order, and the session dates the end of speech from when it
gets the event: were it dated back to the real end, a user who went on talking during the hold could be cut off,
because the START_OF_SPEECH saying so is queued behind it. The price: the endpointing delay starts after the
last segment's transcript (Whisper on one segment, ~0.3 s on a quiet machine) instead of at the end of speech.

Tune the wrapped VAD (`inner`, e.g. with `agent.speech.tune_vad`): Silero's options belong to the VAD object and
all its streams; the worker runs one room per job process, so that is one room's VAD.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

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
    """A stream of the wrapped VAD, passed through without another task or channel hop per frame."""

    def __init__(self, tapped: TappedVAD, inner: vad.VADStream) -> None:
        super().__init__(tapped)
        self._tapped = tapped
        self._inner = inner

    async def _main_task(self) -> None:
        return None  # the wrapped stream does the work; this base-class task has nothing to do

    def push_frame(self, frame: rtc.AudioFrame) -> None:
        self._inner.push_frame(frame)

    def flush(self) -> None:
        self._inner.flush()

    def end_input(self) -> None:
        self._inner.end_input()

    async def __anext__(self) -> vad.VADEvent:
        event = await self._inner.__anext__()
        ending = event.type == vad.VADEventType.END_OF_SPEECH
        if ending:
            self._tapped.stages.segment_ended(time.time() - event.silence_duration - event.inference_duration)
        self._tapped._publish(event)
        holds = self._tapped._take_holds()
        if holds and ending:
            _, pending = await asyncio.wait(holds, timeout=MAX_HOLD)
            if pending:
                logger.warning("a speech segment's transcript took over %.0f s; the turn may end without it", MAX_HOLD)
        if ending:
            self._tapped.stages.session_told = time.time()
        return event

    async def aclose(self) -> None:
        await self._inner.aclose()
        await super().aclose()
