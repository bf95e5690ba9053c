"""`auto` decides from the room's state: a worker that is gone is not waited for, and `livekit` keeps its timeout.

The room tells the bridge within milliseconds that a killed worker left; `auto` then takes the local loop at once
(the reason says so) and dispatches a worker in the background. How fast the decision is, is measured in
`python -m bench --only fallback`; here only the behaviour is checked. The patience is set long (30 s) so that a
decision made by waiting it out would show in the reason ("answered ... within 30.0 s").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from livekit import rtc

from agent.config import Settings
from mcp_bridge.converse_types import ConverseRequest, TransportUnavailable, no_progress
from mcp_bridge.livekit import LiveKitTransport
from mcp_bridge.transport_choice import choose_transport

from .conftest import wait_until
from .harness import TestUser, WorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]


async def linked_worker(transport: LiveKitTransport, user: str = "alice") -> str:
    """The worker the bridge found, once it listens to `user` (dispatch and job start included)."""
    worker = await transport.ensure_worker(120)
    for _ in range(600):
        if worker.info.user_identity == user:
            return worker.identity
        await asyncio.sleep(0.2)
        worker = await transport.ensure_worker(30)
    raise AssertionError(f"the worker never listened to {user}")


async def test_auto_takes_the_local_loop_at_once_when_the_worker_left_and_dispatches_another(
    start_lk_worker: Callable[..., WorkerProcess], lk_settings: Callable[..., Settings], lk_user: TestUser
) -> None:
    agent_name = "voice-mcp-fallback-test"
    worker = start_lk_worker(voice_mcp_agent_name=agent_name)
    settings = lk_settings(agent_name=agent_name, livekit_timeout=30.0)
    transport = LiveKitTransport(settings)
    local = object()
    try:
        identity = await linked_worker(transport)
        left = asyncio.Event()

        def on_left(participant: rtc.RemoteParticipant) -> None:
            if participant.identity == identity:
                left.set()

        transport.link.on_participant_left(on_left)
        worker.kill()
        await asyncio.wait_for(left.wait(), 60)
        dispatches = transport.dispatcher.dispatches

        chosen, reason = await choose_transport(
            "auto", settings, livekit=transport, local_factory=lambda: local  # type: ignore[arg-type,return-value]
        )
        assert chosen is local
        assert f"no voice-mcp worker is in LiveKit room '{settings.room}'" in reason, reason
        assert reason.endswith("used the local loop"), reason
        await wait_until(lambda: transport.dispatcher.dispatches > dispatches, 30, "a background dispatch")

        # a worker that registers again takes the next call: auto uses the room once more
        start_lk_worker(voice_mcp_agent_name=agent_name)
        await linked_worker(transport)

        def no_local() -> object:
            raise AssertionError("the local loop must not be built when LiveKit serves the call")

        chosen, reason = await choose_transport("auto", settings, livekit=transport, local_factory=no_local)  # type: ignore[arg-type]
        assert chosen is transport and "answered" in reason
    finally:
        await transport.aclose()


async def test_auto_with_nobody_in_the_room_gets_a_worker_ready_in_the_background(
    lk_worker: WorkerProcess, lk_settings: Callable[..., Settings]
) -> None:
    settings = lk_settings(livekit_timeout=30.0)
    transport = LiveKitTransport(settings)
    local = object()
    try:
        chosen, reason = await choose_transport(
            "auto", settings, livekit=transport, local_factory=lambda: local  # type: ignore[arg-type,return-value]
        )
        assert chosen is local and "nobody is in LiveKit room" in reason
        await wait_until(lambda: transport.dispatcher.dispatches >= 1, 30, "a background dispatch")
        room = transport.link.room
        assert room is not None
        await wait_until(
            lambda: any(p.startswith("voice-mcp-agent-") for p in room.remote_participants), 120, "the worker"
        )
    finally:
        await transport.aclose()


async def test_forced_livekit_waits_the_configured_timeout_for_a_worker(
    lk_settings: Callable[..., Settings], lk_user: TestUser
) -> None:
    settings = lk_settings(agent_name="voice-mcp-nobody-home", livekit_timeout=2.0)
    transport = LiveKitTransport(settings)
    try:
        chosen, _ = await choose_transport("livekit", settings, livekit=transport, local_factory=object)  # type: ignore[arg-type]
        assert chosen is transport
        with pytest.raises(TransportUnavailable) as caught:
            await asyncio.wait_for(chosen.converse(ConverseRequest(message="Anyone?"), no_progress), 60)
    finally:
        await transport.aclose()
    assert "within 2.0 s" in caught.value.message, caught.value.message
    assert "python -m agent start" in caught.value.hint
