"""The worker's side of a converse call: speak a message, then hand back the user's next complete turn.

`ConverseService` owns the ordering guarantee: every complete user turn either goes to the converse call that
is waiting for it or into a FIFO queue that the next call delivers (as `earlier`). Nothing the user says is
dropped. It talks to the voice session through the small `SessionPort` protocol, so the logic is testable
without a room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

from .protocol import (
    HEARTBEAT_INTERVAL,
    TURN_GRACE_SECONDS,
    ConverseCall,
    ConverseFailed,
    ConverseOk,
    EndedBy,
    OptionName,
    PingReply,
    Progress,
    SpeakOptions,
    Stage,
    Utterance,
    WireTimings,
    speak_timeout,
)

logger = logging.getLogger(__name__)

@dataclass
class SpeakOutcome:
    interrupted: bool
    first_audio_s: float | None = None
    """Seconds from the say() call to the first audio frame played into the room (None: nothing played)."""
    speak_s: float | None = None
    error: str | None = None


class OptionsRefused(Exception):
    """No provider of the session can honour a per-call option; `fix` says what to do instead."""

    def __init__(self, message: str, fix: str) -> None:
        self.message = message
        self.fix = fix
        super().__init__(message)


Cue = Literal["listening_started", "listening_stopped"]


class SessionPort(Protocol):
    """What the service needs from the running voice session."""

    async def speak(self, text: str, *, allow_interruptions: bool, within: float) -> SpeakOutcome: ...

    def tune_listening(self, silence_ms: int, vad_aggressiveness: int | None) -> None: ...

    def apply_options(self, speak: SpeakOptions, language: str | None) -> None:
        """Voice, speed and STT language for this call (`OptionsRefused` when no provider can take one)."""
        ...

    def ignored_options(self, *, spoke: bool, transcribed: bool) -> list[OptionName]:
        """Options the providers that served could not honour (after a failover)."""
        ...

    def restore_options(self) -> None: ...

    def play_cue(self, cue: Cue) -> None:
        """Start playing a listening cue into the room (does not wait for it)."""
        ...

    def user_speaking(self) -> bool: ...

    def user_identity(self) -> str | None: ...


ProgressSink = Callable[[str, Progress], Awaitable[None]]
"""Publishes a progress packet to the given caller identity."""

TurnSink = Callable[[Utterance], None]
"""Announces a turn the service has just taken (the worker tells the bridge: `agent.protocol.TurnNotice`)."""


@dataclass
class _ActiveCall:
    call: ConverseCall
    caller: str
    started: float = field(default_factory=time.monotonic)
    replies: list[Utterance] = field(default_factory=list)
    earlier: list[Utterance] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    stage: Stage = "received"
    seq: int = 0


def merge(turns: list[Utterance]) -> Utterance:
    if len(turns) == 1:
        return turns[0]
    return Utterance(
        id=turns[0].id,
        text=" ".join(t.text.strip() for t in turns if t.text.strip()),
        source="voice" if any(t.source == "voice" for t in turns) else "text",
        received_at=turns[-1].received_at,
        started_speaking_at=turns[0].started_speaking_at,
        stopped_speaking_at=turns[-1].stopped_speaking_at,
        transcription_delay_ms=turns[-1].transcription_delay_ms,
    )


class ConverseService:
    def __init__(
        self,
        port: SessionPort,
        *,
        agent_name: str,
        progress: ProgressSink,
        barge_in: bool = True,
        llm: str | None = None,
        stt_provider: str | None = None,
        tts_provider: str | None = None,
        default_silence_ms: int = 1000,
        default_vad_aggressiveness: int = 2,
        queue_limit: int = 1000,
        announce: TurnSink | None = None,
    ) -> None:
        self._port = port
        self._agent_name = agent_name
        self._progress = progress
        self._barge_in = barge_in
        self._llm = llm
        self._stt_provider = stt_provider
        self._tts_provider = tts_provider
        self._default_silence_ms = default_silence_ms
        self._default_vad_aggressiveness = default_vad_aggressiveness
        self._queue: deque[Utterance] = deque(maxlen=queue_limit)
        self._active: _ActiveCall | None = None
        self._announce = announce

    # --- user turns -----------------------------------------------------------------------------------------
    def on_user_turn(self, utterance: Utterance) -> bool:
        """Route one complete user turn. True: a converse call took it (no LLM reply wanted)."""
        if not utterance.text.strip():
            return False
        active = self._active
        if active is None and self._llm is not None:
            utterance = utterance.model_copy(update={"answered_by_llm": True})
        if self._announce is not None:
            try:
                self._announce(utterance)
            except Exception:  # the notice is a second copy; the turn is still routed below
                logger.exception("announcing a user turn failed")
        if active is not None:
            active.replies.append(utterance)
            active.arrived.set()
            return True
        if len(self._queue) == self._queue.maxlen:
            logger.error(
                "turn queue full: the oldest queued turn is dropped (%d turns taken, no converse call)",
                len(self._queue),
            )
        self._queue.append(utterance)
        logger.info("user turn queued (no converse call waiting)", extra={"queued": len(self._queue)})
        return False

    @property
    def queued(self) -> int:
        return len(self._queue)

    def ping(self) -> PingReply:
        return PingReply(
            agent_name=self._agent_name,
            user_identity=self._port.user_identity(),
            busy=self._active is not None,
            queued=len(self._queue),
            stt_provider=self._stt_provider,
            tts_provider=self._tts_provider,
            llm=self._llm,
        )

    # --- converse -------------------------------------------------------------------------------------------
    async def converse(self, call: ConverseCall, caller: str) -> ConverseOk | ConverseFailed:
        if self._active is not None:
            return ConverseFailed(
                id=call.id, code="busy", message="another converse call is in progress", hint="retry when it ends"
            )
        if self._port.user_identity() is None:
            return ConverseFailed(
                id=call.id,
                code="no_user",
                message="nobody is in the LiveKit room to talk to",
                hint="join the room (for example from the LiveKit Agents Playground) and try again",
            )
        active = _ActiveCall(call=call, caller=caller, earlier=list(self._queue))
        self._queue.clear()
        self._active = active
        heartbeat = asyncio.create_task(self._heartbeat(active), name=f"voice-mcp.heartbeat.{call.id}")
        try:
            return await self._converse(active)
        except asyncio.CancelledError:
            # the caller gave up (cancel RPC, deadline, disconnect): nothing it did not receive is lost
            self._requeue(active.earlier, active)
            raise
        finally:
            self._active = None
            if active.replies:  # completed after the answer was built: the next call's
                self._requeue([], active)
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self._port.tune_listening(self._default_silence_ms, self._default_vad_aggressiveness)
            self._port.restore_options()

    async def _converse(self, active: _ActiveCall) -> ConverseOk | ConverseFailed:
        call = active.call
        message = call.message or ""
        earlier = active.earlier
        timings = WireTimings()
        try:
            self._port.apply_options(call.speak, call.listen.language)
        except OptionsRefused as exc:  # before anything is said or taken: the caller may retry without it
            self._requeue(earlier, active)
            return ConverseFailed(id=call.id, code="unsupported_option", message=exc.message, hint=exc.fix)
        self._port.tune_listening(call.listen.silence_ms, call.listen.vad_aggressiveness)

        interrupted = False
        if message.strip():
            await self._set_stage(active, "speaking")
            outcome = await self._port.speak(
                message, allow_interruptions=self._barge_in, within=speak_timeout(message, call.speak.speed or 1.0)
            )
            if outcome.error is not None:
                self._requeue(earlier, active)
                return ConverseFailed(
                    id=call.id, code="speech_failed", message=f"speaking the message failed: {outcome.error}"
                )
            interrupted = outcome.interrupted
            timings.first_audio_ms = _ms(outcome.first_audio_s)
            timings.speak_ms = _ms(outcome.speak_s)

        if not call.wait_for_response:
            # The call took what was queued; a turn that completed while speaking goes back to the queue.
            self._requeue([], active)
            return self._ok(active, earlier, None, timings, interrupted, "not_waiting")
        if earlier or active.replies:
            # The user already said something this call has not delivered: hand it over now, in order.
            reply = merge(active.replies) if active.replies else None
            return self._ok(active, earlier, reply, timings, interrupted, "queued" if earlier else "silence")

        await self._set_stage(active, "listening")
        if call.listen.audio_cues:
            self._port.play_cue("listening_started")
        listen_started = time.monotonic()
        reply, ended_by = await self._listen(active)
        timings.listen_ms = _ms(time.monotonic() - listen_started)
        if call.listen.audio_cues:
            self._port.play_cue("listening_stopped")
        if reply is not None:
            if reply.stopped_speaking_at is not None:
                timings.listen_ms = max(0.0, round((reply.stopped_speaking_at - _unix(listen_started)) * 1000, 1))
                timings.end_of_speech_to_result_ms = max(
                    0.0, round((time.time() - reply.stopped_speaking_at) * 1000, 1)
                )
            timings.stt_ms = reply.transcription_delay_ms
        return self._ok(active, earlier, reply, timings, interrupted, ended_by)

    async def _listen(self, active: _ActiveCall) -> tuple[Utterance | None, EndedBy]:
        params = active.call.listen
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + params.max_seconds
        ended_by: EndedBy = "silence"
        while True:
            active.arrived.clear()  # cleared before the checks: nothing can arrive between them (no await)
            now = loop.time()
            enough = bool(active.replies) and params.silence_detection and now - started >= params.min_seconds
            if enough and not self._port.user_speaking():
                break
            if now >= deadline:
                ended_by = "max_duration"
                if self._port.user_speaking() or not active.replies:
                    # a turn in progress at the deadline may still finish, within a bound
                    grace_end = deadline + TURN_GRACE_SECONDS
                    count = len(active.replies)
                    while self._port.user_speaking() and loop.time() < grace_end and len(active.replies) == count:
                        await _wait_event(active.arrived, min(0.2, grace_end - loop.time()))
                break
            wake = deadline if not active.replies else min(deadline, started + params.min_seconds)
            await _wait_event(active.arrived, max(0.05, min(wake - now, 0.5)))
        return (merge(active.replies) if active.replies else None), ended_by

    def _ok(
        self,
        active: _ActiveCall,
        earlier: list[Utterance],
        reply: Utterance | None,
        timings: WireTimings,
        interrupted: bool,
        ended_by: EndedBy,
    ) -> ConverseOk:
        replies = active.replies if reply is not None else []
        if reply is not None:
            active.replies = []  # a turn completing from now until the call is over goes back to the queue
        return ConverseOk(
            id=active.call.id,
            reply=reply,
            earlier=earlier,
            heard_speech=reply is not None or bool(earlier),
            interrupted=interrupted,
            ended_by=ended_by,
            timings=timings,
            stt_provider=self._stt_provider,
            tts_provider=self._tts_provider,
            ignored_options=self._port.ignored_options(
                # earlier turns were transcribed before this call's options applied
                spoke=timings.first_audio_ms is not None, transcribed=reply is not None and reply.source == "voice"
            ),
            delivered=[turn.id for turn in [*earlier, *replies]],
            held=[turn.id for turn in self._queue],
        )

    def _requeue(self, earlier: list[Utterance], active: _ActiveCall) -> None:
        """Put undelivered turns back at the front of the queue, keeping their order."""
        undelivered = [*earlier, *active.replies]
        active.replies.clear()
        for utterance in reversed(undelivered):
            self._queue.appendleft(utterance)

    async def _set_stage(self, active: _ActiveCall, stage: Stage) -> None:
        active.stage = stage
        await self._send_progress(active)

    async def _send_progress(self, active: _ActiveCall) -> None:
        active.seq += 1
        packet = Progress(
            id=active.call.id,
            seq=active.seq,
            stage=active.stage,
            elapsed_ms=round((time.monotonic() - active.started) * 1000, 1),
        )
        try:
            await self._progress(active.caller, packet)
        except Exception as exc:  # progress is best effort; the bridge's own timeout covers a dead link
            logger.debug("progress packet not sent: %s", exc)

    async def _heartbeat(self, active: _ActiveCall) -> None:
        while True:
            await self._send_progress(active)
            await asyncio.sleep(HEARTBEAT_INTERVAL)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _unix(monotonic_time: float) -> float:
    return time.time() - (time.monotonic() - monotonic_time)


async def _wait_event(event: asyncio.Event, within: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(within, 0.01))
