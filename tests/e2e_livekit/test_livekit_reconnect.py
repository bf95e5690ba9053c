"""The bridge keeps one room connection and re-joins by itself when the server goes away and comes back."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config import Settings
from mcp_bridge.converse_types import ConverseRequest, VoiceError, no_progress
from mcp_bridge.livekit import LiveKitTransport

from .conftest import wait_until
from .harness import TestUser, start_server, start_worker

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]


async def test_the_bridge_rejoins_after_a_server_restart_and_converse_works_again(
    _require_netns: None, lk_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    server = start_server(tmp_path)
    port = server.port
    room = f"restart-{uuid.uuid4().hex[:6]}"
    settings = lk_settings(livekit_url=server.url, room=room, agent_name="voice-mcp-restart")
    worker = start_worker(server, tmp_path, {"VOICE_MCP_AGENT_NAME": "voice-mcp-restart"})
    transport = LiveKitTransport(settings, worker_start_timeout=120)
    user: TestUser | None = None
    try:
        await transport.ensure_worker(120)
        first_room = transport.link.room
        assert first_room is not None and transport.link.connects == 1

        server.stop()
        server = start_server(tmp_path, port=port)  # same address, empty server: the room is gone

        user = await TestUser.join(server, room)
        # a converse call finds the link down, waits for the re-join, dispatches the (re-registered) worker
        result = None
        failures: list[str] = []
        for _attempt in range(12):
            try:
                result = await asyncio.wait_for(
                    transport.converse(ConverseRequest(message="I am back online.", wait_for_response=False),
                                       no_progress),
                    180,
                )
                break
            except (VoiceError, TimeoutError) as exc:  # the link or the worker may still be on its way back
                failures.append(repr(exc))
                await asyncio.sleep(5)
        assert result is not None, f"no converse succeeded after the restart: {failures}"
    finally:
        if user is not None:
            await user.leave()
        await transport.aclose()
        worker.stop()
        server.stop()

    assert result.transport == "livekit" and result.ended_by == "not_waiting"
    assert transport.link.connects >= 2, "the bridge joined the room again"
    assert transport.tokens.minted >= 1


async def test_a_second_bridge_with_the_same_identity_is_not_fought_over(
    lk_server: object, lk_settings: Callable[..., Settings]
) -> None:
    """Two MCP clients with a bridge each in one room: the server keeps the newer one (duplicate identity); the
    older does not re-join at once (which would kick the newer out, and so on), only when it is used again."""
    settings = lk_settings()
    first, second = LiveKitTransport(settings), LiveKitTransport(settings)
    try:
        await first.link.ensure_connected(30)
        await second.link.ensure_connected(30)
        # the older bridge's decision, not a quiet period: it left for the duplicate identity and schedules no re-join
        await wait_until(lambda: "DUPLICATE_IDENTITY" in (first.link.last_error or ""), 10, "the older bridge to leave")
        assert not first.link.connected and not first.link.rejoining
        assert second.link.connected and second.link.connects == 1, "the newer bridge was not kicked out again"
    finally:
        await first.aclose()
        await second.aclose()
