"""RPC between two real SDK participants, through the server, with LiveKit's error codes.

Runs against three servers: single peer connection, the ``/rtc`` fallback, and one that
announces participants with ``client_protocol`` 0 so the SDK uses RPC v1 packets instead of
RPC v2 over data streams (which one was used is read from the server's log).
"""

from __future__ import annotations

import asyncio

import pytest
from livekit import rtc

from tests.lkserver.fixtures import LiveKitServerProcess

from .helpers import eventually

pytestmark = [pytest.mark.livekit, pytest.mark.usefixtures("livekit_network")]


@pytest.fixture(params=["v1", "fallback", "legacy"])
def server(request, livekit_server, livekit_server_no_v1, livekit_server_legacy) -> LiveKitServerProcess:
    return {"v1": livekit_server, "fallback": livekit_server_no_v1, "legacy": livekit_server_legacy}[request.param]


@pytest.fixture
async def pair(server, livekit_connect, livekit_room_name) -> tuple[rtc.Room, rtc.Room]:
    alice = await livekit_connect(server, "alice", livekit_room_name)
    bob = await livekit_connect(server, "bob", livekit_room_name)
    await eventually(lambda: "bob" in alice.remote_participants and "alice" in bob.remote_participants)
    return alice, bob


def rpc_lines(server: LiveKitServerProcess) -> list[str]:
    return [line for line in server.log_path.read_text().splitlines() if " data alice -> bob: " in line]


async def test_rpc_round_trip(server, pair):
    alice, bob = pair
    calls: list[rtc.RpcInvocationData] = []

    async def shout(data: rtc.RpcInvocationData) -> str:
        calls.append(data)
        return data.payload.upper()

    bob.local_participant.register_rpc_method("shout", shout)
    answer = await alice.local_participant.perform_rpc(destination_identity="bob", method="shout", payload="hi")

    assert answer == "HI"
    assert [(c.caller_identity, c.payload) for c in calls] == [("alice", "hi")]
    # and back the other way
    alice.local_participant.register_rpc_method("echo", lambda data: data.payload)
    assert await bob.local_participant.perform_rpc(destination_identity="alice", method="echo", payload="x") == "x"

    legacy = server.extra_args == ("--legacy-protocol",)
    expected = "rpc_request" if legacy else "stream_header lk.rpc_request"
    assert any(line.endswith(f": {expected}") for line in rpc_lines(server)), rpc_lines(server)


async def test_handler_failure_is_an_application_error(pair):
    alice, bob = pair

    async def broken(data: rtc.RpcInvocationData) -> str:
        raise ValueError("boom")

    bob.local_participant.register_rpc_method("broken", broken)
    with pytest.raises(rtc.RpcError) as failed:
        await alice.local_participant.perform_rpc(destination_identity="bob", method="broken", payload="")
    assert failed.value.code == rtc.RpcError.ErrorCode.APPLICATION_ERROR == 1500


async def test_handler_rpc_error_reaches_the_caller(pair):
    alice, bob = pair

    async def refuse(data: rtc.RpcInvocationData) -> str:
        raise rtc.RpcError(4001, "not today", "details")

    bob.local_participant.register_rpc_method("refuse", refuse)
    with pytest.raises(rtc.RpcError) as failed:
        await alice.local_participant.perform_rpc(destination_identity="bob", method="refuse", payload="")
    assert (failed.value.code, failed.value.message, failed.value.data) == (4001, "not today", "details")


async def test_slow_handler_times_out(pair):
    alice, bob = pair
    release = asyncio.Event()

    async def slow(data: rtc.RpcInvocationData) -> str:
        await release.wait()
        return "too late"

    bob.local_participant.register_rpc_method("slow", slow)
    try:
        with pytest.raises(rtc.RpcError) as failed:
            await alice.local_participant.perform_rpc(
                destination_identity="bob", method="slow", payload="", response_timeout=1.5
            )
        assert failed.value.code == rtc.RpcError.ErrorCode.RESPONSE_TIMEOUT == 1502
    finally:
        release.set()


async def test_unknown_method_is_unsupported(pair):
    alice, _bob = pair
    with pytest.raises(rtc.RpcError) as failed:
        await alice.local_participant.perform_rpc(destination_identity="bob", method="nope", payload="")
    assert failed.value.code == rtc.RpcError.ErrorCode.UNSUPPORTED_METHOD == 1400
