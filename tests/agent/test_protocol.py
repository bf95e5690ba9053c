"""Unit tests of the bridge<->worker protocol: encoding, large-message streaming, the stream inbox."""

from __future__ import annotations

import asyncio

import pytest

from agent.protocol import (
    MAX_INLINE_BYTES,
    PROTOCOL_VERSION,
    ConverseCall,
    ConverseFailed,
    ConverseOk,
    ListenOptions,
    ProtocolError,
    SpeakOptions,
    StreamedBody,
    Utterance,
    decode_call,
    decode_response_body,
    decode_rpc_response,
    encode_call,
    encode_response,
    utf8_len,
)
from agent.stream_inbox import StreamInbox


def test_small_call_travels_inline() -> None:
    call = ConverseCall(message="Shall I run the tests?")
    payload, streamed = encode_call(call)
    assert streamed is None
    decoded = decode_call(payload)
    assert decoded.message == "Shall I run the tests?"
    assert decoded.message_stream is False
    assert decoded.message_chars == len("Shall I run the tests?")


@pytest.mark.parametrize("size", [MAX_INLINE_BYTES, 50_000, 200_000])
def test_large_call_sends_the_whole_message_as_a_stream(size: int) -> None:
    message = ("héllo wörld, " * (size // 10))[:size]  # multi-byte characters count in bytes, not chars
    call = ConverseCall(message=message)
    payload, streamed = encode_call(call)
    assert utf8_len(payload) <= MAX_INLINE_BYTES
    assert streamed == message  # intact: nothing truncated
    decoded = decode_call(payload)
    assert decoded.message is None and decoded.message_stream
    assert decoded.message_chars == len(message)
    assert decoded.id == call.id


def test_the_inline_limit_is_measured_in_utf8_bytes() -> None:
    message = "ü" * (MAX_INLINE_BYTES // 2)  # fits as characters, not as bytes
    _, streamed = encode_call(ConverseCall(message=message))
    assert streamed == message


def test_large_response_becomes_a_stub_plus_body() -> None:
    reply = Utterance(text="word " * 10_000)
    response = ConverseOk(id="abc", reply=reply, heard_speech=True)
    payload, body = encode_response(response)
    stub = decode_rpc_response(payload)
    assert isinstance(stub, StreamedBody) and stub.id == "abc"
    assert body is not None and stub.chars == len(body)
    full = decode_response_body(body)
    assert isinstance(full, ConverseOk) and full.reply is not None and full.reply.text == reply.text


def test_small_responses_decode_to_their_type() -> None:
    ok, _ = encode_response(ConverseOk(id="1", heard_speech=False, ended_by="max_duration"))
    failed, _ = encode_response(ConverseFailed(id="2", code="no_user", message="nobody here"))
    assert isinstance(decode_rpc_response(ok), ConverseOk)
    decoded = decode_rpc_response(failed)
    assert isinstance(decoded, ConverseFailed) and decoded.code == "no_user"


def test_version_mismatch_is_a_typed_error() -> None:
    payload = ConverseCall(message="hi").model_copy(update={"v": PROTOCOL_VERSION + 1}).model_dump_json()
    with pytest.raises(ProtocolError) as caught:
        decode_call(payload)
    assert caught.value.code == "unsupported_version"


@pytest.mark.parametrize(
    "payload", ["not json", f'{{"v": {PROTOCOL_VERSION}, "id": "x"}}', f'{{"v": {PROTOCOL_VERSION}, "message": 3}}']
)
def test_bad_calls_are_rejected(payload: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_call(payload)
    assert caught.value.code == "bad_request"


async def test_inbox_matches_bodies_in_either_order() -> None:
    inbox = StreamInbox()
    inbox.deliver("early", "body arrived first")
    assert await inbox.receive("early", within=1) == "body arrived first"

    waiter = asyncio.create_task(inbox.receive("late", within=5))
    await asyncio.sleep(0)  # one turn of the loop: the receiver runs up to its wait
    assert len(inbox) == 1, "the receiver is waiting before the body arrives"
    inbox.deliver("late", "body arrived second")
    assert await waiter == "body arrived second"
    assert len(inbox) == 0


async def test_inbox_times_out_and_forgets() -> None:
    inbox = StreamInbox()
    with pytest.raises(TimeoutError):
        await inbox.receive("never", within=0.05)
    assert len(inbox) == 0


async def test_inbox_is_bounded() -> None:
    inbox = StreamInbox(capacity=3)
    for i in range(10):
        inbox.deliver(str(i), "x")
    assert len(inbox) == 3
    assert await inbox.receive("9", within=0.1) == "x"


def test_every_per_call_option_survives_the_wire() -> None:
    """The bridge's request options are the wire's: what the bridge sets is what the worker reads."""
    listen = ListenOptions(
        max_seconds=7, min_seconds=1, silence_ms=600, vad_aggressiveness=3, silence_detection=False,
        audio_cues=False, language="de",
    )
    speak = SpeakOptions(voice="en-gb", speed=1.5)
    payload, _ = encode_call(ConverseCall(message="hi", listen=listen, speak=speak))
    decoded = decode_call(payload)
    assert decoded.listen == listen and decoded.speak == speak
    assert set(ListenOptions.model_fields) == set(decoded.listen.model_dump())
    assert set(SpeakOptions.model_fields) == set(decoded.speak.model_dump())


def test_ignored_options_travel_back() -> None:
    payload, _ = encode_response(ConverseOk(id="1", heard_speech=False, ignored_options=["voice"]))
    decoded = decode_rpc_response(payload)
    assert isinstance(decoded, ConverseOk) and decoded.ignored_options == ["voice"]
