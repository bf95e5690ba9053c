"""`LiveKitTransport`: converse through a voice-mcp worker in a persistent LiveKit room.

The bridge joins `settings.room` once as `settings.bridge_identity` and stays; each converse call finds (or
dispatches) the worker, sends a `ConverseCall` over RPC (the message as a data stream when it is large) and
returns the worker's answer as a `ConverseResult`. Every wait is bounded: the worker must send a progress packet
at least every `settings.livekit_timeout` seconds, and the whole call has a ceiling derived from its length.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from dataclasses import dataclass
from typing import Any

from livekit import rtc

from agent.config import Settings
from agent.participants import is_worker
from agent.protocol import (
    ATTR_REQUEST_ID,
    RPC_CANCEL,
    RPC_CONVERSE,
    TOPIC_MESSAGE,
    TURN_GRACE_SECONDS,
    CancelCall,
    ConverseCall,
    ConverseFailed,
    ConverseOk,
    Progress,
    ProtocolError,
    StreamedBody,
    decode_response_body,
    decode_rpc_response,
    encode_call,
    speak_timeout,
)
from mcp_bridge.converse_types import (
    ConverseRequest,
    ConverseResult,
    ConverseTimeout,
    ProgressCallback,
    ProviderError,
    Stage,
    Timings,
    TransportName,
    TransportUnavailable,
    UnsupportedOption,
    VoiceError,
)
from mcp_bridge.transport_interface import TransportHealth

from .link import RoomLink
from .tokens import TokenSource
from .turn_ledger import TurnLedger
from .workers import (
    PING_TIMEOUT,
    Dispatcher,
    WorkerHandle,
    find_worker,
    users_present,
    worker_candidates,
)

logger = logging.getLogger(__name__)

RESPONSE_STREAM_WAIT = 30.0
REPLACE_SILENT_AFTER = 30.0
"""A worker still in the room that does not answer is given this long (from when it first fell silent) before
another is dispatched. Under load a job's event loop stalls for seconds (seen at load average 50: pongs 1.8 s late
in the median, 13.8 s at worst) and its connection re-joins; dispatching at once put up to 11 jobs into one room,
which only added load. A worker that leaves the room is replaced at once."""
BACKGROUND_WORKER_WAIT = 60.0
"""How long a background dispatch keeps looking for the worker it started (job processes start slowly)."""
_STAGES = {"speaking": Stage.SPEAKING, "listening": Stage.LISTENING, "transcribing": Stage.TRANSCRIBING}


@dataclass(frozen=True)
class RoomPresence:
    workers: list[str]
    """Identities of the voice-mcp workers in the room, in the order the bridge tries them."""
    user: bool
    """Somebody the worker would listen to is in the room."""


class LiveKitTransport:
    name: TransportName = "livekit"

    def __init__(
        self,
        settings: Settings,
        *,
        identity: str | None = None,
        worker_start_timeout: float | None = None,
        heartbeat_timeout: float | None = None,
        token_ttl: datetime.timedelta | None = None,
    ) -> None:
        """`worker_start_timeout`: how long a call waits for a worker to answer, dispatching one when none is
        there (default settings.livekit_timeout, VOICE_MCP_LIVEKIT_TIMEOUT).
        `heartbeat_timeout`: silence from the worker that counts as its death (default settings.livekit_timeout).
        `token_ttl`: lifetime of the bridge's room tokens (default 6 h; tests shorten it to see expiry handled).
        """
        if not (settings.livekit_url and settings.livekit_api_key and settings.livekit_api_secret):
            raise TransportUnavailable(
                "LiveKit is not configured", "set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
            )
        self.settings = settings
        self.identity = identity or settings.bridge_identity
        self.worker_start_timeout = worker_start_timeout or settings.livekit_timeout
        self.heartbeat_timeout = heartbeat_timeout or settings.livekit_timeout
        self.tokens = TokenSource(
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret,
            room=settings.room,
            identity=self.identity,
            **({"ttl": token_ttl} if token_ttl is not None else {}),
        )
        self.link = RoomLink(settings.livekit_url, self.tokens)
        self.dispatcher = Dispatcher(
            url=settings.livekit_url,
            api_key=settings.livekit_api_key,
            api_secret=settings.livekit_api_secret,
            room=settings.room,
            agent_name=settings.agent_name,
        )
        self._worker: WorkerHandle | None = None
        self._call_lock = asyncio.Lock()
        self._warmup: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self.ledger = TurnLedger()
        self._silent_since: dict[str, float] = {}
        """Workers in the room that stopped answering, and since when (time.monotonic)."""
        self.link.on_turn(self.ledger.noticed)
        self.link.on_disconnected(self._forget_worker)
        self.link.on_participant_left(self._on_participant_left)

    def _forget_worker(self) -> None:
        """After a lost connection the room may be new (server restart): find or dispatch a worker afresh."""
        self._worker = None
        self.dispatcher.forget()

    def _on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        """A worker that leaves (crash, shutdown) is replaced by the next dispatch at once, not 15 s later."""
        if is_worker(participant):
            if self._worker is not None and self._worker.identity == participant.identity:
                self._worker = None
            self._silent_since.pop(participant.identity, None)
            self.dispatcher.forget()

    # --- readiness ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Join the room and get a worker dispatched in the background (at bridge start, and whenever `auto` finds
        no worker in the room). Failures are not raised here: the next call reports them."""
        if self._warmup is None or self._warmup.done():
            self._warmup = asyncio.get_running_loop().create_task(self._warm())

    async def _warm(self) -> None:
        with contextlib.suppress(VoiceError):
            await self.ensure_worker(max(BACKGROUND_WORKER_WAIT, self.worker_start_timeout))

    async def presence(self, within: float) -> RoomPresence:
        """Who is in the room now, as the server last told the bridge (joining first, for at most `within` s).

        No RPC: this is what lets `auto` decide at once when the worker has left (the server says so within
        milliseconds of a crash), instead of waiting for a worker that is not there to answer."""
        room = await self.link.ensure_connected(within)
        return RoomPresence(
            workers=[p.identity for p in worker_candidates(room)],
            user=users_present(room, self.identity),
        )

    async def ensure_worker(self, within: float, *, wait_if_dead: bool = True) -> WorkerHandle:
        """A worker in the room that answers, dispatching one if needed; TransportUnavailable after `within` s.

        `wait_if_dead=False`: when no worker in the room answers (crashed: silent, or gone meanwhile), fail at once
        instead of waiting for a new one (a dispatch is still made, for the next call)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        room = await self.link.ensure_connected(within)
        joined = asyncio.Event()
        unsubscribe = self.link.on_participant_joined(lambda _p: joined.set())
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                silent: set[str] = set()  # asked again each round: a stalled job may answer again
                worker = await find_worker(room, min(PING_TIMEOUT, remaining), silent)
                if worker is not None:
                    self._silent_since.pop(worker.identity, None)
                    self._worker = worker
                    return worker
                present = worker_candidates(room)
                if not self._stalled(present, silent) and not self.dispatcher.recently_dispatched():
                    # again after DISPATCH_PATIENCE: a dispatch made while no worker was registered is lost
                    if silent:
                        logger.warning(
                            "dispatching another worker: %s silent for over %.0f s",
                            ", ".join(sorted(silent)),
                            REPLACE_SILENT_AFTER,
                        )
                    await self._dispatch(max(deadline - loop.time(), 0.5))
                if not wait_if_dead and all(p.identity in silent for p in present):  # none left, or none alive
                    self._worker = None
                    raise TransportUnavailable(
                        f"the voice-mcp worker in room '{self.settings.room}' does not answer (it may have crashed "
                        f"or be overloaded); another one is dispatched once it has been silent for "
                        f"{REPLACE_SILENT_AFTER:.0f} s or has left",
                        "retry in a moment; check the worker's logs",
                    )
                joined.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(joined.wait(), min(0.5, max(deadline - loop.time(), 0.01)))
        finally:
            unsubscribe()
        self._worker = None
        raise TransportUnavailable(
            f"no voice-mcp worker (agent '{self.settings.agent_name}') answered in room '{self.settings.room}' "
            f"within {within:.1f} s",
            "start one with `python -m agent start` using the same LIVEKIT_* settings",
        )

    def _stalled(self, present: list[rtc.RemoteParticipant], silent: set[str]) -> bool:
        """Whether a worker in the room that did not answer now is still within its `REPLACE_SILENT_AFTER`."""
        now = time.monotonic()
        stalled = False
        for participant in present:
            if participant.identity not in silent:
                continue
            since = self._silent_since.setdefault(participant.identity, now)
            if now - since < REPLACE_SILENT_AFTER:
                stalled = True
        return stalled

    async def _dispatch(self, within: float) -> None:
        try:
            await self.dispatcher.dispatch(within)
        except Exception as exc:
            raise TransportUnavailable(
                f"could not dispatch agent '{self.settings.agent_name}' to room '{self.settings.room}': {exc}",
                "check LIVEKIT_API_KEY/LIVEKIT_API_SECRET and that the server allows agent dispatch",
            ) from exc

    async def health(self) -> TransportHealth:
        try:
            worker = await self.ensure_worker(self.settings.livekit_timeout)
        except VoiceError as exc:
            return TransportHealth(name="livekit", available=False, detail=str(exc))
        info = worker.info
        user = f"user {info.user_identity}" if info.user_identity else "no user in the room yet"
        return TransportHealth(
            name="livekit",
            available=True,
            detail=f"room '{self.settings.room}', worker {worker.identity} ({user}; {info.queued} queued turns)",
        )

    # --- converse -----------------------------------------------------------------------------------------------
    async def converse(self, request: ConverseRequest, progress: ProgressCallback) -> ConverseResult:
        async with self._call_lock:
            worker = self._worker
            room = self.link.room
            if worker is None or room is None or worker.identity not in room.remote_participants:
                worker = await self.ensure_worker(self.worker_start_timeout)
            try:
                reply = await self._call(worker, request, progress)
            except ConverseTimeout:
                # silent mid-call: slow or dead. It has the REPLACE_SILENT_AFTER of any silent worker, counted from
                # its last sign of life; if it answers again, the next call uses it (and the turns it holds).
                self._silent_since.setdefault(worker.identity, time.monotonic() - self.heartbeat_timeout)
                self._worker = None
                raise
            except TransportUnavailable:
                self._forget_worker()
                raise
            reply, orphaned = self.ledger.settle(worker.identity, reply)
            if orphaned:
                logger.warning(
                    "returning %d user turn(s) that no answer carried (their job is gone or its answer was lost)",
                    len(orphaned),
                )
            result = self._result(reply)
            await progress(Stage.DONE, "reply received" if result.heard_speech else "no reply")
            return result

    async def _call(self, worker: WorkerHandle, request: ConverseRequest, progress: ProgressCallback) -> ConverseOk:
        room = await self.link.ensure_connected(self.settings.livekit_timeout)
        call = converse_call(request)
        payload, streamed_message = encode_call(call)
        ceiling = call_ceiling(request)
        watch = _CallWatch(call.id, worker.identity, self.heartbeat_timeout, progress)
        unsubscribe = [
            self.link.on_progress(watch.on_progress),
            self.link.on_traffic(watch.on_traffic),
            self.link.on_participant_left(watch.on_participant_left),
            self.link.on_disconnected(watch.on_disconnected),
        ]
        try:
            if streamed_message is not None:
                await self._send_message(room, worker.identity, call.id, streamed_message)
            raw = await self._perform_converse(room, worker.identity, call.id, payload, ceiling, watch)
            return await self._read_answer(raw, call.id, ceiling)
        except ProtocolError as exc:
            raise TransportUnavailable(
                f"the worker's answer could not be read: {exc}", "run the same voice-mcp version on both sides"
            ) from exc
        except TimeoutError as exc:
            raise ConverseTimeout("the worker's streamed answer did not arrive in time") from exc
        finally:
            for undo in unsubscribe:
                undo()
            watch.stop()
            self.link.responses.discard(call.id)

    async def _send_message(self, room: rtc.Room, worker: str, call_id: str, message: str) -> None:
        """A message too large for the RPC payload goes first, as a text stream the worker matches by id."""
        await asyncio.wait_for(
            room.local_participant.send_text(
                message, destination_identities=[worker], topic=TOPIC_MESSAGE, attributes={ATTR_REQUEST_ID: call_id}
            ),
            timeout=max(self.settings.livekit_timeout, 30.0),
        )

    async def _perform_converse(
        self, room: rtc.Room, worker: str, call_id: str, payload: str, ceiling: float, watch: _CallWatch
    ) -> asyncio.Future[str]:
        """The finished converse RPC. Raises what `watch` saw (a silent or departed worker) or `ConverseTimeout`;
        a call given up on (or cancelled here) is cancelled on the worker too."""
        rpc = asyncio.ensure_future(
            room.local_participant.perform_rpc(
                destination_identity=worker, method=RPC_CONVERSE, payload=payload, response_timeout=ceiling
            )
        )
        watch.start()
        try:
            waiting: set[asyncio.Future[Any]] = {rpc, watch.failed}
            done, _ = await asyncio.wait(waiting, timeout=ceiling + 5.0, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not rpc.done():  # given up (worker silent, ceiling, or this call cancelled): tell the worker
                rpc.cancel()
                self._cancel_on_worker(room, worker, call_id)
        if rpc not in done:
            if watch.failed in done:
                raise watch.failed.result()
            raise ConverseTimeout(f"the LiveKit worker did not finish the converse call within {ceiling:.0f} s")
        return rpc

    async def _read_answer(self, rpc: asyncio.Future[str], call_id: str, ceiling: float) -> ConverseOk:
        """The worker's answer (fetched from its response stream when it did not fit); a failure raises."""
        try:
            answer = decode_rpc_response(rpc.result())
        except rtc.RpcError as exc:
            raise _rpc_error(exc, ceiling) from exc
        if isinstance(answer, StreamedBody):
            body = await self.link.responses.receive(call_id, within=RESPONSE_STREAM_WAIT)
            answer = decode_response_body(body)
        if isinstance(answer, ConverseFailed):
            raise _failed(answer)
        return answer

    def _cancel_on_worker(self, room: rtc.Room, worker: str, call_id: str) -> None:
        """Best effort, in the background: a live worker stops and keeps the user's turns for the next call."""

        async def cancel() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    room.local_participant.perform_rpc(
                        destination_identity=worker,
                        method=RPC_CANCEL,
                        payload=CancelCall(id=call_id).model_dump_json(),
                        response_timeout=PING_TIMEOUT,
                        max_round_trip_latency=PING_TIMEOUT,
                    ),
                    PING_TIMEOUT + 1.0,
                )

        task = asyncio.get_running_loop().create_task(cancel())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _result(self, answer: ConverseOk) -> ConverseResult:
        turns = [*answer.earlier, *([answer.reply] if answer.reply is not None else [])]
        t = answer.timings
        return ConverseResult(
            text="\n".join(turn.text.strip() for turn in turns if turn.text.strip()),
            heard_speech=answer.heard_speech,
            transport="livekit",
            timings=Timings(
                first_audio_ms=t.first_audio_ms,
                speak_ms=t.speak_ms,
                listen_ms=t.listen_ms,
                end_of_speech_to_result_ms=t.end_of_speech_to_result_ms,
                stt_ms=t.stt_ms,
            ),
            stt_provider=answer.stt_provider,
            tts_provider=answer.tts_provider,
            interrupted=answer.interrupted,
            ended_by=answer.ended_by,
            ignored_options=answer.ignored_options,
            earlier=[turn.text.strip() for turn in answer.earlier if turn.text.strip()],
        )

    async def aclose(self) -> None:
        if self._background:  # let pending cancel notices reach the worker before leaving the room
            await asyncio.wait(self._background, timeout=PING_TIMEOUT + 2.0)
        if self._warmup is not None:
            self._warmup.cancel()
            with contextlib.suppress(BaseException):
                await self._warmup
        await self.link.aclose()


def call_ceiling(request: ConverseRequest) -> float:
    """The longest the worker may take over `request`: speaking it, listening, the user's last turn, and slack."""
    return (
        speak_timeout(request.message, request.speak.speed or 1.0)
        + (request.listen.max_seconds + TURN_GRACE_SECONDS if request.wait_for_response else 0.0)
        + 30.0
    )


def converse_call(request: ConverseRequest) -> ConverseCall:
    """The wire call for a request: the per-call options are the same models on both sides (`agent.protocol`)."""
    return ConverseCall(
        message=request.message, wait_for_response=request.wait_for_response, listen=request.listen, speak=request.speak
    )


class _CallWatch:
    """Fails a running call when the worker goes quiet, leaves, or the room connection drops."""

    def __init__(self, call_id: str, worker: str, heartbeat_timeout: float, progress: ProgressCallback) -> None:
        self._call_id = call_id
        self._worker = worker
        self._heartbeat_timeout = heartbeat_timeout
        self._progress = progress
        self._last_beat = time.monotonic()
        self._stage: str | None = None
        self.failed: asyncio.Future[VoiceError] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None
        self._progress_tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._last_beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if not self.failed.done():
            self.failed.cancel()

    def _fail(self, error: VoiceError) -> None:
        if not self.failed.done():
            self.failed.set_result(error)

    async def _watch(self) -> None:
        while not self.failed.done():
            silence = time.monotonic() - self._last_beat
            if silence >= self._heartbeat_timeout:
                self._fail(
                    ConverseTimeout(
                        f"the LiveKit worker {self._worker} stopped responding mid-call "
                        f"(no sign of life for {silence:.1f} s)",
                        "the next call dispatches a worker again; check the worker's logs",
                    )
                )
                return
            await asyncio.sleep(min(0.25, self._heartbeat_timeout - silence))

    def on_progress(self, packet: Progress) -> None:
        if packet.id != self._call_id:
            return
        self._last_beat = time.monotonic()
        if packet.stage != self._stage:
            self._stage = packet.stage
            stage = _STAGES.get(packet.stage)
            if stage is not None:
                task = asyncio.get_running_loop().create_task(self._progress(stage, packet.detail or stage.value))
                self._progress_tasks.add(task)
                task.add_done_callback(self._progress_tasks.discard)

    def on_traffic(self, identity: str) -> None:
        """Any packet from the worker is a sign of life: its progress may queue behind its own data."""
        if identity == self._worker:
            self._last_beat = time.monotonic()

    def on_participant_left(self, participant: rtc.RemoteParticipant) -> None:
        if participant.identity == self._worker:
            self._fail(
                TransportUnavailable(
                    f"the LiveKit worker {self._worker} left the room mid-call",
                    "the next call dispatches a worker again",
                )
            )

    def on_disconnected(self) -> None:
        self._fail(TransportUnavailable("the bridge lost its LiveKit room connection mid-call", "retry"))


def _failed(answer: ConverseFailed) -> VoiceError:
    if answer.code == "speech_failed":
        return ProviderError(answer.message, answer.hint)
    if answer.code == "unsupported_option":
        return UnsupportedOption(answer.message, answer.hint)
    return TransportUnavailable(f"LiveKit worker: {answer.message} [{answer.code}]", answer.hint)


def _rpc_error(exc: rtc.RpcError, ceiling: float) -> VoiceError:
    code = exc.code
    if code == rtc.RpcError.ErrorCode.RESPONSE_TIMEOUT:
        return ConverseTimeout(f"the LiveKit worker did not answer within {ceiling:.0f} s")
    if code == rtc.RpcError.ErrorCode.RECIPIENT_DISCONNECTED:
        return TransportUnavailable("the LiveKit worker disconnected mid-call", "the next call dispatches it again")
    if code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD:
        return TransportUnavailable(
            "the agent in the room does not serve voice-mcp converse calls", "run the voice-mcp worker"
        )
    return TransportUnavailable(f"the converse RPC failed: {exc.message} ({code})", "retry")
