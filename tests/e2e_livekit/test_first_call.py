"""A first call never hangs: a message that cannot be played fails soon, saying why, and the worker keeps serving.

livekit-agents plays the worker's audio only once somebody in the room has subscribed to its track. A user who has
not (yet) subscribed used to make the first `converse` wait the whole speaking bound in silence (42 s in a field
report); now the call fails within `agent.playback.FIRST_AUDIO_WITHIN` saying the message was not played, and the
worker still answers. Once somebody subscribes, the next call plays.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
from livekit import rtc

from agent.config import Settings
from mcp_bridge.converse_types import ConverseRequest, ProviderError, no_progress
from mcp_bridge.livekit import LiveKitTransport

from .conftest import wait_until
from .harness import ServerProcess, WorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]


async def test_a_message_nobody_can_hear_fails_with_a_clear_error_and_the_worker_still_answers(
    lk_worker: WorkerProcess, lk_server: ServerProcess, lk_settings: Callable[..., Settings], lk_room: str
) -> None:
    user = rtc.Room()
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

        worker = await transport.ensure_worker(60)  # the worker still answers, and the call is over
        assert not worker.info.busy
    finally:
        await transport.aclose()
        await asyncio.wait_for(user.disconnect(), 10)


async def test_the_next_call_plays_once_a_late_user_subscribes(
    lk_worker: WorkerProcess, lk_server: ServerProcess, lk_settings: Callable[..., Settings], lk_room: str
) -> None:
    user = rtc.Room()
    loud_frames: list[int] = []  # peak of each loud 10 ms frame the user heard from the worker
    tasks: set[asyncio.Task[None]] = set()

    async def record(track: rtc.Track) -> None:
        async for event in rtc.AudioStream(track, sample_rate=16000, num_channels=1):
            peak = int(np.abs(np.frombuffer(event.frame.data, dtype=np.int16)).max(initial=0))
            if peak > 1000:
                loud_frames.append(peak)

    def on_track(track: rtc.Track, *_: object) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            task = asyncio.ensure_future(record(track))
            tasks.add(task)

    user.on("track_subscribed", on_track)
    await user.connect(lk_server.url, lk_server.token("alice", lk_room), options=rtc.RoomOptions(auto_subscribe=False))
    transport = LiveKitTransport(lk_settings(), worker_start_timeout=120)
    try:
        with pytest.raises(ProviderError):  # nobody listens yet
            await asyncio.wait_for(
                transport.converse(ConverseRequest(message="Can you hear me?", wait_for_response=False), no_progress),
                240,
            )
        assert not loud_frames

        worker = next(p for p in user.remote_participants.values() if p.identity.startswith("voice-mcp-agent-"))
        for publication in worker.track_publications.values():
            publication.set_subscribed(True)
        await wait_until(lambda: bool(tasks), 30, "the worker's audio track subscribed")

        result = await asyncio.wait_for(
            transport.converse(ConverseRequest(message="Now you can hear me.", wait_for_response=False), no_progress),
            120,
        )
        assert result.timings.first_audio_ms is not None, result
        await wait_until(lambda: len(loud_frames) >= 20, 30, "the second message heard in the room")
    finally:
        await transport.aclose()
        for task in tasks:
            task.cancel()
        await asyncio.wait_for(user.disconnect(), 10)
