"""What the bridge counts as a worker's sign of life during a call.

A worker's progress packets share one ordered data channel with everything else it sends. Speaking a long message,
livekit-agents publishes its transcript word by word (a text stream chunk and a legacy transcription packet per
word); on a slow link or a busy server thousands of those queue ahead of the next progress packet and of the
answer. Seen in CI: the answer of the longest message arrived after the bridge had declared the worker dead
("no sign of life for 8 s"). Every packet from the worker is therefore a sign of life; packets from anybody else
are not.

The worker here is a stand-in participant speaking the real protocol over the loopback server (real SDK), so the
test controls exactly what it sends while it makes the call wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from livekit import api, rtc

from agent.config import Settings
from agent.protocol import (
    RPC_CONVERSE,
    RPC_PING,
    ConverseOk,
    PingReply,
    decode_call,
    encode_response,
)
from mcp_bridge.converse_types import ConverseRequest, ConverseTimeout
from mcp_bridge.livekit import LiveKitTransport

from .harness import ServerProcess, TestUser

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(120)]

SILENCE_LIMIT = 1.0
"""The bridge's `heartbeat_timeout` in these tests: the stand-in keeps the call waiting three times as long."""
CALL_TAKES = 3 * SILENCE_LIMIT
CHATTER_EVERY = 0.2


class StandInWorker:
    """A participant that answers ping and converse as a worker would, but sends no progress packets: during a call
    it sends what `chatter` says (data on an unrelated topic, or nothing) and answers after `CALL_TAKES` s."""

    def __init__(self, room: rtc.Room, chatter: Callable[[], asyncio.Future[None] | None]) -> None:
        self.room = room
        self._chatter = chatter
        self.calls = 0
        room.local_participant.register_rpc_method(RPC_PING, self._on_ping)
        room.local_participant.register_rpc_method(RPC_CONVERSE, self._on_converse)

    @classmethod
    async def join(
        cls, server: ServerProcess, room_name: str, chatter: Callable[[], asyncio.Future[None] | None]
    ) -> StandInWorker:
        room = rtc.Room()
        await room.connect(server.url, _token(server, room_name, "stand-in-worker", kind="agent"))
        return cls(room, chatter)

    async def _on_ping(self, data: rtc.RpcInvocationData) -> str:
        return PingReply(agent_name="stand-in", user_identity="alice").model_dump_json()

    async def _on_converse(self, data: rtc.RpcInvocationData) -> str:
        call = decode_call(data.payload)
        self.calls += 1
        chatter = self._chatter()
        try:
            await asyncio.sleep(CALL_TAKES)  # the stand-in's "speaking": what is measured is the bridge's patience
        finally:
            if chatter is not None:
                chatter.cancel()
        payload, body = encode_response(ConverseOk(id=call.id, heard_speech=False, ended_by="not_waiting"))
        assert body is None
        return payload

    async def leave(self) -> None:
        await self.room.disconnect()


def _token(server: ServerProcess, room_name: str, identity: str, *, kind: str = "standard") -> str:
    grants = api.VideoGrants(room_join=True, room=room_name, can_publish=True, can_subscribe=True,
                             can_publish_data=True)
    return (
        api.AccessToken(server.api_key, server.api_secret)
        .with_identity(identity)
        .with_kind(kind)  # type: ignore[arg-type]
        .with_grants(grants)
        .to_jwt()
    )


async def _chatter_forever(room: rtc.Room, topic: str) -> None:
    while True:
        await room.local_participant.publish_data(b"lorem ipsum " * 20, reliable=True, topic=topic)
        await asyncio.sleep(CHATTER_EVERY)


@pytest.fixture
async def bystander(lk_server: ServerProcess, lk_room: str) -> AsyncIterator[rtc.Room]:
    room = rtc.Room()
    await room.connect(lk_server.url, _token(lk_server, lk_room, "bystander"))
    yield room
    await room.disconnect()


async def _converse(transport: LiveKitTransport) -> object:
    try:
        return await asyncio.wait_for(
            transport.converse(ConverseRequest(message="Hello.", wait_for_response=False), _no_progress), 60
        )
    finally:
        await transport.aclose()


async def _no_progress(stage: object, detail: str) -> None:
    return None


async def test_a_worker_whose_other_packets_still_arrive_is_alive(
    lk_server: ServerProcess, lk_room: str, lk_settings: Callable[..., Settings], lk_user: TestUser
) -> None:
    def chatter() -> asyncio.Task[None]:  # cancelled by the stand-in when it answers
        return asyncio.create_task(_chatter_forever(worker.room, "stand-in.transcript"))

    worker = await StandInWorker.join(lk_server, lk_room, chatter)
    try:
        transport = LiveKitTransport(lk_settings(agent_name="stand-in"), heartbeat_timeout=SILENCE_LIMIT)
        result = await _converse(transport)
    finally:
        await worker.leave()
    assert worker.calls == 1
    assert getattr(result, "transport", None) == "livekit" and getattr(result, "ended_by", None) == "not_waiting"


async def test_packets_from_somebody_else_are_no_sign_of_the_workers_life(
    lk_server: ServerProcess, lk_room: str, lk_settings: Callable[..., Settings], lk_user: TestUser,
    bystander: rtc.Room,
) -> None:
    tasks: list[asyncio.Task[None]] = []

    def bystander_chatters() -> asyncio.Task[None]:
        task = asyncio.create_task(_chatter_forever(bystander, "bystander.chatter"))
        tasks.append(task)
        return task

    worker = await StandInWorker.join(lk_server, lk_room, bystander_chatters)
    try:
        transport = LiveKitTransport(lk_settings(agent_name="stand-in"), heartbeat_timeout=SILENCE_LIMIT)
        with pytest.raises(ConverseTimeout, match="no sign of life"):
            await _converse(transport)
    finally:
        for task in tasks:
            task.cancel()
        await worker.leave()
    assert worker.calls == 1
