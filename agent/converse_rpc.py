"""The worker's side of the bridge↔worker protocol (`agent.protocol`): the RPC methods it serves in a room
(converse, ping, cancel) and the text streams that carry messages too large for one RPC payload."""

from __future__ import annotations

import asyncio
import json
import logging

from livekit import rtc

from .converse_service import ConverseService
from .protocol import (
    ATTR_REQUEST_ID,
    RPC_CANCEL,
    RPC_CONVERSE,
    RPC_PING,
    TOPIC_MESSAGE,
    TOPIC_RESPONSE,
    CancelCall,
    CancelReply,
    ConverseCall,
    ConverseFailed,
    ConverseOk,
    ProtocolError,
    decode_call,
    encode_response,
)
from .stream_inbox import StreamInbox

logger = logging.getLogger(__name__)

MESSAGE_STREAM_WAIT = 30.0
"""Seconds a converse call waits for its streamed message to finish arriving."""


def register_message_streams(room: rtc.Room, inbox: StreamInbox) -> None:
    """Deliver every message stream (`TOPIC_MESSAGE`) into `inbox` under its request id."""
    tasks: set[asyncio.Task[None]] = set()

    async def read(reader: rtc.TextStreamReader) -> None:
        request_id = (reader.info.attributes or {}).get(ATTR_REQUEST_ID)
        if not request_id:
            logger.warning("message stream without %s ignored", ATTR_REQUEST_ID)
            return
        logger.debug("message stream %s arriving (%s bytes)", request_id, reader.info.size)
        try:
            text = await reader.read_all()
            logger.debug("message stream %s complete: %d characters", request_id, len(text))
            inbox.deliver(request_id, text)
        except Exception as exc:
            inbox.fail(request_id, exc)

    def on_stream(reader: rtc.TextStreamReader, participant_identity: str) -> None:
        logger.debug("text stream from %s", participant_identity)
        task = asyncio.create_task(read(reader))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    room.register_text_stream_handler(TOPIC_MESSAGE, on_stream)


def register_rpc(room: rtc.Room, service: ConverseService, inbox: StreamInbox) -> None:
    """Serve converse, ping and cancel in `room` (streamed messages are taken from `inbox`)."""
    handlers = ConverseRpc(room.local_participant, service, inbox)
    room.local_participant.register_rpc_method(RPC_CONVERSE, handlers.on_converse)
    room.local_participant.register_rpc_method(RPC_PING, handlers.on_ping)
    room.local_participant.register_rpc_method(RPC_CANCEL, handlers.on_cancel)


class ConverseRpc:
    """The RPC handlers of one room, and the converse calls they are running (so a cancel can find them)."""

    def __init__(self, local: rtc.LocalParticipant, service: ConverseService, inbox: StreamInbox) -> None:
        self._local = local
        self._service = service
        self._inbox = inbox
        self._running: dict[str, asyncio.Task[ConverseOk | ConverseFailed]] = {}
        self._cancelled: set[str] = set()

    async def on_converse(self, data: rtc.RpcInvocationData) -> str:
        try:
            call = decode_call(data.payload)
        except ProtocolError as exc:
            return ConverseFailed(id=_request_id(data.payload), code=exc.code, message=str(exc)).model_dump_json()
        if call.message_stream:
            streamed = await self._with_streamed_message(call)
            if isinstance(streamed, ConverseFailed):
                return streamed.model_dump_json()
            call = streamed
        response = await self._run(call, data.caller_identity)
        return await self._answer(response, call.id, data.caller_identity)

    async def _with_streamed_message(self, call: ConverseCall) -> ConverseCall | ConverseFailed:
        """`call` with the message that follows it as a text stream, or why that message is missing."""
        logger.debug("converse %s waits for its %d-character message stream", call.id, call.message_chars)
        try:
            message = await self._inbox.receive(call.id, within=MESSAGE_STREAM_WAIT)
        except Exception as exc:  # TimeoutError, or the stream broke off
            return ConverseFailed(
                id=call.id, code="message_missing", message=f"the streamed message did not arrive: {exc!r}"
            )
        if len(message) != call.message_chars:
            return ConverseFailed(
                id=call.id,
                code="message_missing",
                message=f"streamed message has {len(message)} characters, expected {call.message_chars}",
            )
        return call.model_copy(update={"message": message})

    async def _run(self, call: ConverseCall, caller: str) -> ConverseOk | ConverseFailed:
        """The service's answer to `call`; a cancel from the caller and a crash become typed failures."""
        task = asyncio.ensure_future(self._service.converse(call, caller))
        self._running[call.id] = task
        try:
            return await task
        except asyncio.CancelledError:
            if call.id not in self._cancelled:
                raise  # the SDK cancelled the handler (deadline, disconnect): it answers the caller itself
            return ConverseFailed(id=call.id, code="cancelled", message="the caller cancelled the call")
        except Exception as exc:
            logger.exception("converse call %s failed", call.id)
            return ConverseFailed(id=call.id, code="internal", message=f"the worker failed: {exc!r}")
        finally:
            self._running.pop(call.id, None)
            self._cancelled.discard(call.id)

    async def _answer(self, response: ConverseOk | ConverseFailed, request_id: str, caller: str) -> str:
        """The RPC payload for `response`; a body too large for it goes first as a text stream."""
        payload, body = encode_response(response)
        if body is not None:
            await self._local.send_text(
                body, destination_identities=[caller], topic=TOPIC_RESPONSE, attributes={ATTR_REQUEST_ID: request_id}
            )
        return payload

    async def on_ping(self, data: rtc.RpcInvocationData) -> str:
        return self._service.ping().model_dump_json()

    async def on_cancel(self, data: rtc.RpcInvocationData) -> str:
        try:
            request = CancelCall.model_validate_json(data.payload)
        except ValueError:
            return CancelReply(cancelled=False).model_dump_json()
        task = self._running.get(request.id)
        if task is None or task.done():
            return CancelReply(cancelled=False).model_dump_json()
        self._cancelled.add(request.id)
        task.cancel()
        logger.info("converse call %s cancelled by %s", request.id, data.caller_identity)
        return CancelReply(cancelled=True).model_dump_json()


def _request_id(payload: str) -> str:
    try:
        value = json.loads(payload).get("id")
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""
