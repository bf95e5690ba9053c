"""A first call never hangs: a message that cannot be played fails soon, saying why, and the worker keeps serving.

livekit-agents plays the worker's audio only once somebody in the room has subscribed to its track. A user who has
not (yet) subscribed used to make the first `converse` wait the whole speaking bound in silence (42 s in a field
report); now the call fails within `agent.playback.FIRST_AUDIO_WITHIN` with the reason, and once somebody
listens the next call is spoken.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from livekit import rtc

from agent.config import Settings
from mcp_bridge.livekit import LiveKitTransport
from mcp_bridge.models import ConverseRequest, ProviderError, no_progress

from .harness import ServerProcess, WorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]


async def test_a_message_nobody_can_hear_fails_with_the_reason_and_the_worker_keeps_serving(
    lk_worker: WorkerProcess, lk_server: ServerProcess, lk_settings: Callable[..., Settings], lk_room: str
) -> None:
    user, listener = rtc.Room(), rtc.Room()
    await user.connect(lk_server.url, lk_server.token("alice", lk_room), options=rtc.RoomOptions(auto_subscribe=False))
    transport = LiveKitTransport(lk_settings(), worker_start_timeout=120)
    try:
        with pytest.raises(ProviderError) as caught:
            await asyncio.wait_for(
                transport.converse(ConverseRequest(message="Can you hear me?", wait_for_response=False), no_progress),
                240,
            )
        # the reason: nobody subscribed (when the audio output says so), or at least that nothing was played
        assert "not played" in caught.value.message or "no audio was played" in caught.value.message, caught.value

        # somebody who listens joins (the loopback server has no manual subscription: a second participant does)
        await listener.connect(
            lk_server.url, lk_server.token("bob", lk_room), options=rtc.RoomOptions(auto_subscribe=True)
        )
        result = await asyncio.wait_for(
            transport.converse(ConverseRequest(message="Now you can.", wait_for_response=False), no_progress), 240
        )
    finally:
        await transport.aclose()
        for room in (user, listener):
            await asyncio.wait_for(room.disconnect(), 10)
    assert result.transport == "livekit" and result.timings.first_audio_ms is not None
