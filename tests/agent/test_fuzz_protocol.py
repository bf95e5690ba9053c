"""Fuzzing the bridge↔worker protocol (Hypothesis): whatever a peer sends, nothing crashes, hangs or is lost.

- the decode functions of `agent.protocol` raise only `ProtocolError` (typed, with a wire error code);
- the worker's real RPC handlers (`agent.converse_rpc.register_rpc`: converse, ping, cancel) over the real
  `ConverseService` answer every payload with a readable response within a bound, and a converse call cancelled
  at a random moment keeps every user turn (returned, or queued for the next call);
- the bridge's room link reads any progress packet and response stream without raising.

The handlers are registered on a recording stand-in for `room.local_participant` (the only part they touch), and
the voice session is the `FakePort` of the service's unit tests: thousands of cases through a live room would take
hours. Case counts are the `max_examples` below (the report in docs/performance.md adds them up).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livekit import rtc

import agent.converse_rpc as rpc_module
from agent.converse_service import ConverseService
from agent.protocol import (
    PROTOCOL_VERSION,
    RPC_CANCEL,
    RPC_CONVERSE,
    RPC_PING,
    TOPIC_PROGRESS,
    CancelReply,
    ConverseFailed,
    ConverseOk,
    PingReply,
    Progress,
    ProtocolError,
    StreamedBody,
    Utterance,
    decode_call,
    decode_response_body,
    decode_rpc_response,
)
from agent.stream_inbox import StreamInbox
from mcp_bridge.livekit.link import RoomLink
from mcp_bridge.livekit.tokens import TokenSource

from .test_converse_service import FakePort

HANDLER_BOUND = 10.0
"""Seconds within which a handler must answer one fuzzed call (a hang check, not a speed limit)."""

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_HANDLERS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=40)
json_values = st.recursive(
    json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def listen_params() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {},
        optional={
            "max_seconds": st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=5),
            "min_seconds": st.floats(min_value=-5, max_value=5) | st.none(),
            "silence_ms": st.integers(min_value=-10, max_value=20000),
            "vad_aggressiveness": st.none() | st.integers(min_value=-2, max_value=6),
            "silence_detection": st.booleans() | st.integers(),
            "language": st.text(max_size=8),
        },
    )


def converse_objects() -> st.SearchStrategy[dict[str, Any]]:
    """Converse calls near the valid ones: right field names with good, bad and missing values."""
    return st.fixed_dictionaries(
        {},
        optional={
            "v": st.sampled_from([PROTOCOL_VERSION, 0, 2, -1]) | st.text(max_size=3),
            "id": st.text(max_size=40) | st.integers(),
            "message": st.none() | st.text(max_size=300) | st.integers(),
            "message_stream": st.booleans(),
            "message_chars": st.integers(min_value=-5, max_value=10**6),
            "wait_for_response": st.booleans() | st.none(),
            "listen": listen_params() | json_values,
            "speak": st.fixed_dictionaries(
                {}, optional={"voice": st.none() | st.text(max_size=10), "speed": st.floats(allow_nan=True)}
            )
            | json_values,
            "extra": json_values,
        },
    )


payloads = (
    st.text(max_size=200)
    | json_values.map(json.dumps)
    | converse_objects().map(lambda obj: json.dumps(obj, allow_nan=True))
    | st.binary(max_size=64).map(lambda raw: raw.decode("utf-8", "replace"))
)


# --- the decode functions ----------------------------------------------------------------------------------------


@FUZZ
@given(payloads)
def test_decode_call_returns_a_call_or_raises_a_typed_protocol_error(payload: str) -> None:
    try:
        call = decode_call(payload)
    except ProtocolError as exc:
        assert exc.code in ("bad_request", "unsupported_version") and str(exc)
        return
    assert call.v == PROTOCOL_VERSION and (call.message is not None or call.message_stream)


responses = payloads | st.builds(
    lambda status, rest: json.dumps({"v": 1, "id": "x", "status": status, **rest}),
    st.sampled_from(["ok", "error", "streamed", "other"]),
    st.dictionaries(st.sampled_from(["heard_speech", "code", "message", "chars", "reply", "earlier"]), json_values),
)


@FUZZ
@given(responses)
def test_decoding_a_response_gives_a_model_or_a_protocol_error(payload: str) -> None:
    for decode in (decode_rpc_response, decode_response_body):
        try:
            answer = decode(payload)
        except ProtocolError:
            continue
        assert isinstance(answer, ConverseOk | ConverseFailed | StreamedBody)


# --- the worker's RPC handlers -----------------------------------------------------------------------------------


class RecordingParticipant:
    """What `register_rpc` uses of `room.local_participant`: method registration and text streams."""

    def __init__(self) -> None:
        self.handlers: dict[str, Callable[[rtc.RpcInvocationData], Awaitable[str]]] = {}
        self.streams: list[tuple[str, str, dict[str, str]]] = []

    def register_rpc_method(self, name: str, handler: Callable[[rtc.RpcInvocationData], Awaitable[str]]) -> None:
        self.handlers[name] = handler

    async def send_text(
        self, text: str, *, destination_identities: list[str], topic: str, attributes: dict[str, str]
    ) -> None:
        self.streams.append((text, topic, attributes))


class RoomStandIn:
    def __init__(self) -> None:
        self.local_participant = RecordingParticipant()


class Worker:
    """The real handlers over the real service, with a fake voice session that the test feeds user turns."""

    def __init__(self) -> None:
        self.port = FakePort()
        self.port.speak_seconds = 0.0
        self.service = ConverseService(self.port, agent_name="voice-mcp", progress=self._progress)
        self.port.service = self.service
        self.room = RoomStandIn()
        self.inbox = StreamInbox()
        rpc_module.register_rpc(self.room, self.service, self.inbox)  # type: ignore[arg-type]
        self.fed = 0

    async def _progress(self, caller: str, packet: Progress) -> None:
        Progress.model_validate_json(packet.model_dump_json())

    async def call(self, method: str, payload: str, request_id: str = "r") -> str:
        handler = self.room.local_participant.handlers[method]
        data = rtc.RpcInvocationData(request_id, "voice-mcp-bridge", payload, 5.0, method)
        return await handler(data)

    async def feed_turns_until(self, done: asyncio.Future[Any]) -> None:
        """The user keeps talking (a turn every 20 ms) until the call is answered: no call listens forever."""
        while not done.done():
            await asyncio.sleep(0.02)
            self.fed += 1
            self.service.on_user_turn(Utterance(text=f"turn {self.fed}"))


def returned_turns(answer: ConverseOk) -> int:
    """How many of the user's turns one answer carries (a reply may merge several turns into one text)."""
    replies = len(answer.reply.text.split("turn ")) - 1 if answer.reply is not None else 0
    return len(answer.earlier) + replies


@pytest.fixture(autouse=True)
def short_stream_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    # a call announcing a streamed message that never comes waits this long before `message_missing`
    monkeypatch.setattr(rpc_module, "MESSAGE_STREAM_WAIT", 0.05)


@FUZZ_HANDLERS
@given(payloads, st.floats(min_value=0, max_value=0.05), st.booleans())
def test_the_converse_handler_answers_every_payload_and_loses_no_turn(
    payload: str, cancel_after: float, cancel: bool
) -> None:
    async def scenario() -> None:
        worker = Worker()
        call = asyncio.ensure_future(worker.call(RPC_CONVERSE, payload))
        feeder = asyncio.ensure_future(worker.feed_turns_until(call))
        cancelled: list[bool] = []
        if cancel:
            await asyncio.sleep(cancel_after)
            request_id = _id_of(payload)
            if request_id is not None:
                reply = CancelReply.model_validate_json(
                    await worker.call(RPC_CANCEL, json.dumps({"v": 1, "id": request_id}))
                )
                cancelled.append(reply.cancelled)
        answer_payload = await asyncio.wait_for(call, HANDLER_BOUND)
        await feeder
        answer = decode_rpc_response(answer_payload)  # always readable by the bridge
        if isinstance(answer, StreamedBody):
            body = next(text for text, _topic, attrs in worker.room.local_participant.streams)
            answer = decode_response_body(body)
        delivered = returned_turns(answer) if isinstance(answer, ConverseOk) else 0
        assert delivered + worker.service.queued == worker.fed, (answer, worker.fed, worker.service.queued)
        if isinstance(answer, ConverseFailed) and answer.code == "cancelled":
            assert cancelled == [True]
        ping = PingReply.model_validate_json(await worker.call(RPC_PING, "{}"))
        assert not ping.busy, "the call is over"

    asyncio.run(scenario())


@FUZZ
@given(payloads)
def test_ping_and_cancel_answer_any_payload(payload: str) -> None:
    async def scenario() -> None:
        worker = Worker()
        PingReply.model_validate_json(await asyncio.wait_for(worker.call(RPC_PING, payload), HANDLER_BOUND))
        reply = CancelReply.model_validate_json(await asyncio.wait_for(worker.call(RPC_CANCEL, payload), HANDLER_BOUND))
        assert reply.cancelled is False  # nothing was running

    asyncio.run(scenario())


def _id_of(payload: str) -> str | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value.get("id") if isinstance(value, dict) and isinstance(value.get("id"), str) else None


# --- the bridge's side: progress packets and response streams ------------------------------------------------------

progress_packets = (
    payloads
    | st.builds(
        lambda seq, stage, elapsed, call_id: json.dumps(
            {"v": 1, "id": call_id, "seq": seq, "stage": stage, "elapsed_ms": elapsed}, allow_nan=True
        ),
        st.integers(),
        st.sampled_from(["received", "speaking", "listening", "transcribing", "done", "bogus"]),
        st.floats(allow_nan=True),
        st.sampled_from(["call-1", "other", ""]),
    )
).map(lambda text: text.encode("utf-8", "surrogatepass"))


@FUZZ
@given(st.lists(progress_packets | st.binary(max_size=64), min_size=1, max_size=8))
def test_the_bridge_reads_any_progress_packet_without_raising(packets: list[bytes]) -> None:
    async def scenario() -> None:
        link = RoomLink(
            "ws://127.0.0.1:9", TokenSource(api_key="k", api_secret="s" * 40, room="r", identity="voice-mcp-bridge")
        )
        room = rtc.Room()
        link._attach(room)  # the real handlers on a real (unconnected) Room, fed through its event emitter
        seen: list[Progress] = []
        link.on_progress(seen.append)
        for data in packets:
            room.emit("data_received", rtc.DataPacket(data=data, kind=rtc.DataPacketKind.KIND_RELIABLE,
                                                      participant=None, topic=TOPIC_PROGRESS))
        for packet in seen:
            assert packet.v == PROTOCOL_VERSION
        await link.aclose()

    asyncio.run(scenario())
