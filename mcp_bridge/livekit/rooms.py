"""Rooms on the LiveKit server: what is there, how the persistent room is doing, closing, and idle cleanup.

Everything goes through LiveKit's RoomService API (`livekit.api.LiveKitAPI.room`), signed with the bridge's own
key pair, so it works the same on LiveKit Cloud, a self-hosted server and the loopback test server. The health
of the worker in the persistent room comes from the bridge's own connection to that room (a `voice-mcp.ping`
RPC); the bridge is in no other room, so other rooms report who is there but not whether their worker answers.

Idle cleanup: a room other than the persistent one that has had no human participant for `room_idle_timeout`
seconds is deleted. "Human" follows the worker's rule (`agent.linking.is_user`): not the bridge, not a worker,
not an agent. The bridge only knows when it last *saw* a human, so a room is never deleted sooner than the
timeout after the bridge started watching it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Literal

import aiohttp
from livekit import api, rtc
from livekit.protocol import models
from pydantic import BaseModel, Field

from agent.config import Settings
from agent.protocol import ATTR_ROLE, WORKER_IDENTITY_PREFIX
from mcp_bridge.converse_types import VoiceError

from .transport import LiveKitTransport
from .workers import PING_TIMEOUT, ping, worker_candidates

logger = logging.getLogger(__name__)

API_TIMEOUT = 10.0
RECENT_DELETIONS = 50
"""How many idle-cleanup deletions `list_rooms` remembers (the oldest are forgotten)."""

Role = Literal["user", "worker", "bridge", "agent", "other"]

_KIND_NAMES = {
    models.ParticipantInfo.Kind.STANDARD: "standard",
    models.ParticipantInfo.Kind.INGRESS: "ingress",
    models.ParticipantInfo.Kind.EGRESS: "egress",
    models.ParticipantInfo.Kind.SIP: "sip",
    models.ParticipantInfo.Kind.AGENT: "agent",
    models.ParticipantInfo.Kind.CONNECTOR: "connector",
}
_HUMAN_KINDS = {
    models.ParticipantInfo.Kind.STANDARD,
    models.ParticipantInfo.Kind.SIP,
    models.ParticipantInfo.Kind.CONNECTOR,
}
_QUALITY_NAMES = {
    rtc.ConnectionQuality.QUALITY_POOR: "poor",
    rtc.ConnectionQuality.QUALITY_GOOD: "good",
    rtc.ConnectionQuality.QUALITY_EXCELLENT: "excellent",
    rtc.ConnectionQuality.QUALITY_LOST: "lost",
}


# --- errors ---------------------------------------------------------------------------------------------------


class LiveKitNotConfigured(VoiceError):
    code = "livekit_not_configured"


class RoomNotFound(VoiceError):
    code = "room_not_found"


class PersistentRoomProtected(VoiceError):
    code = "persistent_room"


class RoomServiceFailed(VoiceError):
    code = "room_service"


# --- results --------------------------------------------------------------------------------------------------


class ParticipantSummary(BaseModel):
    identity: str
    name: str = ""
    kind: str = Field(description="LiveKit participant kind: standard, agent, sip, ingress, egress, connector.")
    role: Role = Field(description="user (a person), worker, bridge, agent (another agent) or other.")
    joined_at: float | None = Field(None, description="Unix seconds.")
    connection_quality: str | None = Field(
        None, description="excellent, good, poor or lost, as the server reports it to the bridge; null: not reported."
    )


class RoomSummary(BaseModel):
    name: str
    persistent: bool = Field(description="The room the bridge lives in (VOICE_MCP_ROOM); never cleaned up.")
    participants: list[ParticipantSummary]
    worker_present: bool
    humans: int
    created_at: float | None = Field(None, description="Unix seconds.")
    last_activity_at: float | None = Field(
        None, description="Unix seconds: the latest of creation, a join, and the last time the bridge saw a person."
    )


class CleanupReport(BaseModel):
    ran_at: float = Field(description="Unix seconds.")
    idle_timeout_s: float
    deleted: list[str] = Field(default_factory=list, description="Rooms deleted by this run.")
    errors: list[str] = Field(default_factory=list)


class CleanupState(BaseModel):
    idle_timeout_s: float = Field(description="VOICE_MCP_ROOM_IDLE_TIMEOUT; 0: idle rooms are never deleted.")
    last_run: CleanupReport | None = None
    recently_deleted: list[str] = Field(default_factory=list, description="Rooms idle cleanup deleted, oldest first.")


class RoomList(BaseModel):
    persistent_room: str
    rooms: list[RoomSummary]
    cleanup: CleanupState


class WorkerStatus(BaseModel):
    identity: str
    healthy: bool = Field(description="It answered a voice-mcp.ping just now.")
    converse_waiting: bool | None = Field(None, description="A converse call is running on it.")
    queued_utterances: int | None = Field(None, description="User turns waiting for the next converse call.")
    listening_to: str | None = Field(None, description="The participant (device) it listens to.")


class RoomStatus(BaseModel):
    room: str
    exists: bool
    persistent: bool
    participants: list[ParticipantSummary] = Field(default_factory=list)
    worker_present: bool = False
    workers: list[WorkerStatus] = Field(
        default_factory=list, description="Pinged only in the persistent room (the bridge is in no other)."
    )
    bridge_connected: bool | None = Field(None, description="The bridge's own connection (persistent room only).")
    created_at: float | None = None
    last_activity_at: float | None = None
    cleanup: CleanupState
    note: str = ""


class CloseResult(BaseModel):
    room: str
    closed: bool
    participants_removed: list[str]


# --- who is who -----------------------------------------------------------------------------------------------


def participant_role(info: models.ParticipantInfo, bridge_identity: str) -> Role:
    """The same rule as the worker's `agent.linking.is_user`, on the RoomService's ParticipantInfo."""
    role_attribute = info.attributes.get(ATTR_ROLE)
    if info.identity == bridge_identity or role_attribute == "bridge":
        return "bridge"
    if info.identity.startswith(WORKER_IDENTITY_PREFIX) or role_attribute == "worker":
        return "worker"
    if info.kind == models.ParticipantInfo.Kind.AGENT:
        return "agent"
    if info.kind in _HUMAN_KINDS:
        return "user"
    return "other"


def _summarise(
    info: models.ParticipantInfo, bridge_identity: str, quality: dict[str, str | None]
) -> ParticipantSummary:
    joined = info.joined_at_ms / 1000 if info.joined_at_ms else (float(info.joined_at) if info.joined_at else None)
    return ParticipantSummary(
        identity=info.identity,
        name=info.name,
        kind=_KIND_NAMES.get(info.kind, "standard"),
        role=participant_role(info, bridge_identity),
        joined_at=joined,
        connection_quality=quality.get(info.identity),
    )


def _created_at(room: models.Room) -> float | None:
    if room.creation_time_ms:
        return room.creation_time_ms / 1000
    return float(room.creation_time) if room.creation_time else None


# --- the manager ----------------------------------------------------------------------------------------------


ApiFactory = Callable[[], api.LiveKitAPI]


class RoomManager:
    """Lists, inspects, closes and cleans up rooms. `start()` runs idle cleanup in the background."""

    def __init__(
        self,
        settings: Settings,
        *,
        transport: Callable[[], LiveKitTransport | None] | None = None,
        api_factory: ApiFactory | None = None,
    ) -> None:
        if not settings.livekit_configured:
            raise LiveKitNotConfigured(
                "LiveKit is not configured", "set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
            )
        self.settings = settings
        self._transport = transport or (lambda: None)
        self._api_factory = api_factory or (
            lambda: api.LiveKitAPI(settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret)
        )
        self._human_seen_at: dict[str, float] = {}
        self._watch_started = time.time()
        self._last_cleanup: CleanupReport | None = None
        self._recently_deleted: deque[str] = deque(maxlen=RECENT_DELETIONS)
        self._cleanup_task: asyncio.Task[None] | None = None
        self._cleanup_lock = asyncio.Lock()
        self.cleanup_runs = 0

    @property
    def idle_timeout(self) -> float:
        return self.settings.room_idle_timeout

    def cleanup_state(self) -> CleanupState:
        return CleanupState(
            idle_timeout_s=self.idle_timeout,
            last_run=self._last_cleanup,
            recently_deleted=list(self._recently_deleted),
        )

    # --- the API ----------------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _api(self) -> AsyncIterator[api.LiveKitAPI]:
        lkapi = self._api_factory()
        try:
            async with asyncio.timeout(API_TIMEOUT):
                yield lkapi
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND:
                raise RoomNotFound(f"the LiveKit server says: {exc.message}", "call list_rooms for the rooms") from exc
            raise RoomServiceFailed(
                f"the LiveKit RoomService refused: {exc.message} ({exc.code})",
                "check LIVEKIT_API_KEY/LIVEKIT_API_SECRET (they need room list/create/admin rights)",
            ) from exc
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise RoomServiceFailed(
                f"the LiveKit RoomService at {self.settings.livekit_url} did not answer ({type(exc).__name__}: {exc})",
                "check that the LiveKit server is running and LIVEKIT_URL is right",
            ) from exc
        finally:
            await lkapi.aclose()

    async def _rooms(self, lkapi: api.LiveKitAPI, names: list[str] | None = None) -> list[models.Room]:
        response = await lkapi.room.list_rooms(api.ListRoomsRequest(names=names or []))
        return list(response.rooms)

    async def _participants(self, lkapi: api.LiveKitAPI, room: str) -> list[models.ParticipantInfo]:
        try:
            response = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
        except api.TwirpError as exc:
            if exc.code == api.TwirpErrorCode.NOT_FOUND:
                return []  # closed between the two calls
            raise
        return list(response.participants)

    def _observe(self, room: models.Room, participants: list[models.ParticipantInfo], now: float) -> bool:
        """Remember when a person was last seen in `room`; True when one is there now."""
        humans = any(participant_role(p, self.settings.bridge_identity) == "user" for p in participants)
        if humans:
            self._human_seen_at[room.name] = now
        return humans

    def _summary(self, room: models.Room, participants: list[models.ParticipantInfo]) -> RoomSummary:
        quality = self._qualities() if room.name == self.settings.room else {}
        people = [_summarise(p, self.settings.bridge_identity, quality) for p in participants]
        activity = [
            t for t in (_created_at(room), *(p.joined_at for p in people), self._human_seen_at.get(room.name)) if t
        ]
        return RoomSummary(
            name=room.name,
            persistent=room.name == self.settings.room,
            participants=people,
            worker_present=any(p.role == "worker" for p in people),
            humans=sum(1 for p in people if p.role == "user"),
            created_at=_created_at(room),
            last_activity_at=max(activity) if activity else None,
        )

    def _qualities(self) -> dict[str, str | None]:
        """Connection quality of each participant as the server reports it to the bridge (persistent room only)."""
        transport = self._transport()
        room = transport.link.room if transport is not None else None
        if room is None:
            return {}
        found: dict[str, str | None] = {
            p.identity: _QUALITY_NAMES.get(p.connection_quality) for p in room.remote_participants.values()
        }
        found[room.local_participant.identity] = _QUALITY_NAMES.get(room.local_participant.connection_quality)
        return found

    # --- tools ------------------------------------------------------------------------------------------------
    async def list_rooms(self) -> RoomList:
        now = time.time()
        async with self._api() as lkapi:
            rooms = await self._rooms(lkapi)
            summaries = []
            for room in sorted(rooms, key=lambda r: (r.name != self.settings.room, r.name)):
                participants = await self._participants(lkapi, room.name)
                self._observe(room, participants, now)
                summaries.append(self._summary(room, participants))
        return RoomList(persistent_room=self.settings.room, rooms=summaries, cleanup=self.cleanup_state())

    async def room_status(self, name: str | None = None) -> RoomStatus:
        name = name or self.settings.room
        persistent = name == self.settings.room
        now = time.time()
        async with self._api() as lkapi:
            rooms = await self._rooms(lkapi, [name])
            room = next((r for r in rooms if r.name == name), None)
            participants = await self._participants(lkapi, name) if room is not None else []
        if room is None:
            if not persistent:
                raise RoomNotFound(f"there is no room '{name}' on the LiveKit server", "call list_rooms for the rooms")
            return RoomStatus(
                room=name,
                exists=False,
                persistent=True,
                bridge_connected=self._bridge_connected(),
                cleanup=self.cleanup_state(),
                note="the persistent room does not exist yet: the bridge creates it when it joins (first converse)",
            )
        self._observe(room, participants, now)
        summary = self._summary(room, participants)
        workers: list[WorkerStatus] = []
        note = ""
        if persistent:
            workers = await self._ping_workers()
        elif summary.worker_present:
            note = "the bridge is only in the persistent room, so workers elsewhere are listed but not pinged"
        return RoomStatus(
            room=name,
            exists=True,
            persistent=persistent,
            participants=summary.participants,
            worker_present=summary.worker_present,
            workers=workers,
            bridge_connected=self._bridge_connected() if persistent else None,
            created_at=summary.created_at,
            last_activity_at=summary.last_activity_at,
            cleanup=self.cleanup_state(),
            note=note,
        )

    def _bridge_connected(self) -> bool:
        transport = self._transport()
        return transport is not None and transport.link.connected

    async def _ping_workers(self) -> list[WorkerStatus]:
        transport = self._transport()
        if transport is None:
            return []
        try:
            room = await transport.link.ensure_connected(self.settings.livekit_timeout)
        except VoiceError as exc:
            logger.info("room status without worker health: %s", exc)
            return []
        found = []
        for participant in worker_candidates(room):
            result = await ping(room, participant.identity, PING_TIMEOUT)
            reply = result.reply
            found.append(
                WorkerStatus(
                    identity=participant.identity,
                    healthy=reply is not None,
                    converse_waiting=reply.busy if reply else None,
                    queued_utterances=reply.queued if reply else None,
                    listening_to=reply.user_identity if reply else None,
                )
            )
        return found

    async def close_room(self, name: str, *, force: bool = False) -> CloseResult:
        if not name.strip():
            raise RoomNotFound("no room name given", "pass the name of a room from list_rooms")
        if name == self.settings.room and not force:
            raise PersistentRoomProtected(
                f"'{name}' is the persistent room the bridge and the user talk in",
                "pass force=true to close it anyway (everybody is disconnected; the bridge re-joins when needed)",
            )
        async with self._api() as lkapi:
            rooms = await self._rooms(lkapi, [name])
            if not any(r.name == name for r in rooms):
                raise RoomNotFound(f"there is no room '{name}' on the LiveKit server", "call list_rooms for the rooms")
            participants = await self._participants(lkapi, name)
            await lkapi.room.delete_room(api.DeleteRoomRequest(room=name))
        self._human_seen_at.pop(name, None)
        logger.info("closed room %s (%d participants)", name, len(participants))
        return CloseResult(room=name, closed=True, participants_removed=[p.identity for p in participants])

    # --- idle cleanup -----------------------------------------------------------------------------------------
    async def cleanup_idle_rooms(self) -> CleanupReport:
        """Delete every room but the persistent one that has had no person in it for `idle_timeout` seconds."""
        async with self._cleanup_lock:
            now = time.time()
            report = CleanupReport(ran_at=now, idle_timeout_s=self.idle_timeout)
            if self.idle_timeout <= 0:
                return report
            try:
                async with self._api() as lkapi:
                    rooms = await self._rooms(lkapi)
                    for room in rooms:
                        if room.name == self.settings.room:
                            continue
                        participants = await self._participants(lkapi, room.name)
                        if self._observe(room, participants, now):
                            continue
                        idle_since = max(
                            self._human_seen_at.get(room.name) or _created_at(room) or now, self._watch_started
                        )
                        if now - idle_since < self.idle_timeout:
                            continue
                        try:
                            await lkapi.room.delete_room(api.DeleteRoomRequest(room=room.name))
                        except api.TwirpError as exc:
                            if exc.code != api.TwirpErrorCode.NOT_FOUND:  # already gone is fine
                                report.errors.append(f"{room.name}: {exc.message}")
                            continue
                        report.deleted.append(room.name)
                        self._recently_deleted.append(room.name)
                        self._human_seen_at.pop(room.name, None)
                        logger.info("deleted room %s: no person in it for %.0f s", room.name, now - idle_since)
                    known = {r.name for r in rooms}
                    for forgotten in set(self._human_seen_at) - known:
                        del self._human_seen_at[forgotten]  # bounded: only rooms that still exist
            except VoiceError as exc:
                report.errors.append(str(exc))
            self._last_cleanup = report
            self.cleanup_runs += 1
            return report

    def cleanup_interval(self) -> float:
        return min(max(self.idle_timeout / 4, 0.5), 60.0)

    def start(self) -> None:
        """Run idle cleanup every `cleanup_interval()` seconds (nothing when the timeout is 0)."""
        if self.idle_timeout <= 0 or (self._cleanup_task is not None and not self._cleanup_task.done()):
            return
        self._cleanup_task = asyncio.get_running_loop().create_task(self._cleanup_loop(), name="voice-mcp.rooms")

    async def _cleanup_loop(self) -> None:
        while True:
            try:
                await self.cleanup_idle_rooms()
            except Exception:
                logger.exception("idle room cleanup failed")
            await asyncio.sleep(self.cleanup_interval())

    async def aclose(self) -> None:
        task, self._cleanup_task = self._cleanup_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
