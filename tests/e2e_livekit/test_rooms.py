"""The room tools (list_rooms, room_status, close_room), idle cleanup and `voice-mcp rooms`, through the MCP
server in-process, against the loopback LiveKit server with the real worker and real SDK participants."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from livekit import api, rtc
from mcp import Client

from agent.config import Settings
from agent.speech import PiperTTS
from mcp_bridge.server import create_server
from mcp_bridge.service import VoiceService

from .conftest import synthesize, wait_until
from .harness import REPO, ServerProcess, TestUser, WorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]


def content(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return dict(result.structured_content or {})


def error_text(result: Any) -> str:
    assert result.is_error, result.structured_content
    return " ".join(getattr(block, "text", "") for block in result.content)


async def join(server: ServerProcess, room: str, identity: str, kind: str = "standard") -> rtc.Room:
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
    token = api.AccessToken(server.api_key, server.api_secret).with_identity(identity).with_grants(grants)
    participant = rtc.Room()
    await participant.connect(server.url, token.with_kind(kind).to_jwt())
    return participant


async def create_room(server: ServerProcess, name: str) -> None:
    async with api.LiveKitAPI(server.url, server.api_key, server.api_secret) as lkapi:
        await lkapi.room.create_room(api.CreateRoomRequest(name=name))


async def test_list_status_and_close_rooms(
    lk_server: ServerProcess,
    lk_worker: WorkerProcess,
    lk_settings: Callable[..., Settings],
    lk_room: str,
    lk_user: TestUser,
    piper: PiperTTS,
    tmp_path: Path,
) -> None:
    settings = lk_settings(room_idle_timeout=0, data_dir=tmp_path, livekit_timeout=30.0)
    service = VoiceService(settings)
    other_room = f"other-{uuid.uuid4().hex[:6]}"
    bob = await join(lk_server, other_room, "bob")
    bob_left = asyncio.Event()
    bob.on("disconnected", lambda *_: bob_left.set())
    try:
        async with Client(create_server(settings, service, prewarm=False), read_timeout_seconds=300) as client:
            transport = service.livekit_transport()
            assert transport is not None
            worker = await transport.ensure_worker(300)
            await wait_until(lambda: "alice" in transport.link.room.remote_participants, 30, "alice seen")  # type: ignore[union-attr]

            listing = content(await client.call_tool("list_rooms", {}))
            rooms = {room["name"]: room for room in listing["rooms"]}
            assert listing["persistent_room"] == lk_room
            assert listing["rooms"][0]["name"] == lk_room, "the persistent room comes first"
            mine = rooms[lk_room]
            roles = {p["identity"]: p["role"] for p in mine["participants"]}
            assert roles["alice"] == "user" and roles[settings.bridge_identity] == "bridge"
            assert roles[worker.identity] == "worker"
            assert mine["persistent"] and mine["worker_present"] and mine["humans"] == 1
            assert mine["created_at"] and mine["last_activity_at"] >= mine["created_at"]
            kinds = {p["identity"]: p["kind"] for p in mine["participants"]}
            assert kinds[worker.identity] == "agent" and kinds["alice"] == "standard"
            assert [p["identity"] for p in rooms[other_room]["participants"]] == ["bob"]
            assert not rooms[other_room]["persistent"] and not rooms[other_room]["worker_present"]
            assert listing["cleanup"]["idle_timeout_s"] == 0

            status = content(await client.call_tool("room_status", {}))
            assert status["room"] == lk_room and status["exists"] and status["bridge_connected"]
            [worker_status] = status["workers"]
            assert worker_status["identity"] == worker.identity and worker_status["healthy"]
            assert worker_status["converse_waiting"] is False and worker_status["queued_utterances"] == 0
            assert worker_status["listening_to"] == "alice"

            # while a converse call waits for the user, room_status says so
            listening = asyncio.Event()

            async def on_progress(progress: float, total: float | None, message: str | None) -> None:
                if (message or "").startswith("listening"):
                    listening.set()

            call = asyncio.create_task(
                client.call_tool(
                    "converse",
                    {"message": "Ready?", "transport": "livekit", "listen_duration_max": 120},
                    progress_callback=on_progress,
                )
            )
            await asyncio.wait_for(listening.wait(), 180)
            busy = content(await client.call_tool("room_status", {"room": lk_room}))
            assert busy["workers"][0]["converse_waiting"] is True
            await lk_user.speak(await synthesize(piper, "Yes, I am ready."))
            assert "ready" in content(await asyncio.wait_for(call, 120))["text"].lower()

            other = content(await client.call_tool("room_status", {"room": other_room}))
            assert other["exists"] and not other["persistent"] and other["workers"] == []
            assert [p["identity"] for p in other["participants"]] == ["bob"]

            assert "[room_not_found]" in error_text(await client.call_tool("room_status", {"room": "no-such-room"}))
            refused = error_text(await client.call_tool("close_room", {"room": lk_room}))
            assert "[persistent_room]" in refused and "force=true" in refused
            assert lk_room in {r["name"] for r in content(await client.call_tool("list_rooms", {}))["rooms"]}

            closed = content(await client.call_tool("close_room", {"room": other_room}))
            assert closed == {"room": other_room, "closed": True, "participants_removed": ["bob"]}
            await asyncio.wait_for(bob_left.wait(), 30)
            names = {r["name"] for r in content(await client.call_tool("list_rooms", {}))["rooms"]}
            assert other_room not in names and lk_room in names
            missing = error_text(await client.call_tool("close_room", {"room": other_room}))
            assert "[room_not_found]" in missing
    finally:
        await bob.disconnect()


async def test_forced_close_of_the_persistent_room_disconnects_everybody(
    lk_server: ServerProcess,
    lk_settings: Callable[..., Settings],
    lk_room: str,
    tmp_path: Path,
) -> None:
    settings = lk_settings(room_idle_timeout=0, data_dir=tmp_path, livekit_timeout=30.0)
    carol = await join(lk_server, lk_room, "carol")
    carol_left = asyncio.Event()
    carol.on("disconnected", lambda *_: carol_left.set())
    try:
        async with Client(create_server(settings, prewarm=False)) as client:
            closed = content(await client.call_tool("close_room", {"room": lk_room, "force": True}))
            assert closed["closed"] and closed["participants_removed"] == ["carol"]
            await asyncio.wait_for(carol_left.wait(), 30)
            status = content(await client.call_tool("room_status", {}))
            assert status["exists"] is False and "creates it" in status["note"]
    finally:
        await carol.disconnect()


async def test_rooms_without_a_person_are_deleted_after_the_idle_timeout(
    lk_server: ServerProcess,
    lk_settings: Callable[..., Settings],
    lk_room: str,
    tmp_path: Path,
) -> None:
    suffix = uuid.uuid4().hex[:6]
    empty, agents_only, occupied = f"empty-{suffix}", f"agents-{suffix}", f"occupied-{suffix}"
    await create_room(lk_server, lk_room)  # the persistent room, with nobody in it: never cleaned up
    await create_room(lk_server, empty)
    robot = await join(lk_server, agents_only, f"robot-{suffix}", kind="agent")
    robot_left = asyncio.Event()
    robot.on("disconnected", lambda *_: robot_left.set())
    dave = await join(lk_server, occupied, "dave")
    settings = lk_settings(room_idle_timeout=1.5, data_dir=tmp_path)
    try:
        async with Client(create_server(settings, prewarm=False)) as client:
            deleted: set[str] = set()

            async def poll() -> None:
                while not {empty, agents_only} <= deleted:
                    cleanup = content(await client.call_tool("list_rooms", {}))["cleanup"]
                    deleted.update(cleanup["recently_deleted"])
                    await asyncio.sleep(0.2)

            await asyncio.wait_for(poll(), 60)
            await asyncio.wait_for(robot_left.wait(), 30)
            listing = content(await client.call_tool("list_rooms", {}))
            names = {r["name"] for r in listing["rooms"]}
            assert {lk_room, occupied} <= names and not {empty, agents_only} & names
            assert occupied not in deleted and lk_room not in deleted
            assert listing["cleanup"]["idle_timeout_s"] == 1.5
            assert listing["cleanup"]["last_run"]["ran_at"] > 0
        assert dave.isconnected()

        # the CLI lists the same through the API, without joining any room
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
        env |= {
            "LIVEKIT_URL": lk_server.url,
            "LIVEKIT_API_KEY": lk_server.api_key,
            "LIVEKIT_API_SECRET": lk_server.api_secret,
            "VOICE_MCP_ROOM": lk_room,
            "PYTHONPATH": str(REPO),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mcp_bridge",
            "rooms",
            "--json",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        cli = json.loads(out)
        cli_rooms = {r["name"]: r for r in cli["rooms"]}
        assert [p["identity"] for p in cli_rooms[occupied]["participants"]] == ["dave"]
        assert cli_rooms[occupied]["humans"] == 1 and cli["persistent_room"] == lk_room

        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mcp_bridge",
            "rooms",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        assert f"{occupied}: 1 participants, 1 people, no worker" in out.decode()
    finally:
        for participant in (robot, dave):
            await participant.disconnect()
