"""transport="auto": LiveKit when it can serve the call, otherwise the local loop, and the result says why.

The local loop here is the real `LocalTransport` on the private PulseAudio (tests.audio.pulse), reached through
the bridge's `VoiceService`, exactly as the MCP tool reaches it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from agent.config import Settings
from mcp_bridge.converse_types import ConverseRequest, ConverseResult, TransportUnavailable, no_progress
from mcp_bridge.livekit import LiveKitTransport
from mcp_bridge.service import VoiceService
from mcp_bridge.transport_choice import choose_transport
from mcp_bridge.transport_interface import Transport
from tests.audio.pulse import VirtualAudio

from .harness import TestUser, WorkerProcess, free_port

pytestmark = [pytest.mark.livekit, pytest.mark.audio, pytest.mark.timeout(600)]


async def speak_locally_with_auto(settings: Settings, virtual_audio: VirtualAudio) -> tuple[ConverseResult, np.ndarray]:
    service = VoiceService(settings)
    try:
        with virtual_audio.record_speaker() as speaker:
            result = await asyncio.wait_for(
                service.converse(
                    ConverseRequest(message="LiveKit is away, so I am using the speaker.", wait_for_response=False),
                    "auto",
                    no_progress,
                ),
                240,
            )
            played = speaker.samples()
    finally:
        await service.aclose()
    return result, played


def loud(samples: np.ndarray) -> bool:
    return samples.size > 0 and int(np.abs(samples.astype(np.int32)).max()) > 1000


async def test_auto_uses_the_local_loop_when_the_livekit_server_is_unreachable(
    lk_settings: Callable[..., Settings], virtual_audio: VirtualAudio, tmp_path: Path
) -> None:
    settings = lk_settings(livekit_url=f"ws://127.0.0.1:{free_port()}", livekit_timeout=3.0, data_dir=tmp_path)
    result, played = await speak_locally_with_auto(settings, virtual_audio)
    assert result.transport == "local"
    assert "could not join the LiveKit room" in result.transport_reason
    assert loud(played), "the message was played on the local speaker"


async def test_auto_uses_the_local_loop_when_no_worker_answers(
    lk_settings: Callable[..., Settings], virtual_audio: VirtualAudio, tmp_path: Path, lk_user: TestUser
) -> None:
    # a server that works and a user in the room, but no worker registered under this agent name
    settings = lk_settings(agent_name="voice-mcp-nobody-home", livekit_timeout=3.0, data_dir=tmp_path)
    result, played = await speak_locally_with_auto(settings, virtual_audio)
    assert result.transport == "local"
    assert "no voice-mcp worker" in result.transport_reason
    assert loud(played)


async def test_auto_uses_the_local_loop_when_nobody_is_in_the_room(
    lk_worker: WorkerProcess, lk_settings: Callable[..., Settings]
) -> None:
    settings = lk_settings(livekit_timeout=60.0)
    local = object()
    transport = LiveKitTransport(settings)
    try:
        chosen, reason = await choose_transport(
            "auto", settings, livekit=transport, local_factory=lambda: local  # type: ignore[arg-type,return-value]
        )
    finally:
        await transport.aclose()
    assert chosen is local
    assert "nobody is in LiveKit room" in reason


async def test_auto_uses_livekit_when_a_worker_and_a_user_are_there(
    lk_worker: WorkerProcess, lk_settings: Callable[..., Settings], lk_user: TestUser
) -> None:
    settings = lk_settings(livekit_timeout=60.0)  # the first dispatch starts a job process: be patient
    transport = LiveKitTransport(settings)
    try:
        worker = await transport.ensure_worker(120)
        for _ in range(300):
            if worker.info.user_identity == "alice":
                break
            await asyncio.sleep(0.2)
            worker = await transport.ensure_worker(30)

        def no_local() -> Transport:
            raise AssertionError("the local loop must not be built when LiveKit serves the call")

        chosen, reason = await choose_transport("auto", settings, livekit=transport, local_factory=no_local)
        assert chosen is transport and "answered" in reason

        forced, _ = await choose_transport("livekit", settings, livekit=transport, local_factory=no_local)
        assert forced is transport
    finally:
        await transport.aclose()


async def test_forcing_livekit_without_configuration_is_a_clear_error(lk_settings: Callable[..., Settings]) -> None:
    settings = lk_settings(livekit_url=None)
    with pytest.raises(TransportUnavailable) as caught:
        await choose_transport("livekit", settings, livekit=None, local_factory=lambda: object())  # type: ignore[arg-type,return-value]
    assert "LIVEKIT_URL" in caught.value.hint
