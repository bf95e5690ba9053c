"""Rooms and participants: the state livekit-server keeps, and who gets told what.

A ``Room`` holds its participants (each reached through a ``ParticipantLink``, implemented by
the signalling session), its published tracks and its agent dispatches. It broadcasts
``ParticipantUpdate``s on join, leave and metadata/attribute/track changes, forwards data
packets to their destination identities, and closes itself when it has been empty for too
long (empty timeout, or departure timeout once somebody had joined), as livekit-server does.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import string
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiortc.mediastreams import MediaStreamTrack
from livekit.protocol import agent_dispatch, models, rtc
from livekit.protocol import room as room_pb

log = logging.getLogger("lkserver.rooms")

DEFAULT_EMPTY_TIMEOUT = 300  # seconds, livekit-server's default
DEFAULT_DEPARTURE_TIMEOUT = 20  # seconds, livekit-server's default

_ALPHABET = string.ascii_letters + string.digits


def new_sid(prefix: str) -> str:
    """A LiveKit-style id: ``PA_`` participant, ``TR_`` track, ``RM_`` room, ``AD_`` dispatch..."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(12))


class ParticipantLink(Protocol):
    """How a room reaches one connected participant (implemented by the signalling session)."""

    def send_signal(self, msg: rtc.SignalResponse) -> None: ...

    def send_data(self, kind: models.DataPacket.Kind.ValueType, payload: bytes) -> None: ...

    def subscribe(self, track: PublishedTrack) -> None: ...

    def unsubscribe(self, track: PublishedTrack) -> None: ...

    async def disconnect(self, reason: models.DisconnectReason.ValueType) -> None: ...


@dataclass
class PublishedTrack:
    """A track a participant published; ``media`` is set once its RTP stream exists."""

    info: models.TrackInfo
    publisher: Participant
    media: MediaStreamTrack | None = None
    subscribed: bool = False  # the publisher has been told that somebody subscribed


@dataclass
class Participant:
    info: models.ParticipantInfo
    link: ParticipantLink
    auto_subscribe: bool = True
    tracks: dict[str, PublishedTrack] = field(default_factory=dict)  # by track sid

    @property
    def identity(self) -> str:
        return self.info.identity

    @property
    def sid(self) -> str:
        return self.info.sid

    @property
    def hidden(self) -> bool:
        return self.info.permission.hidden

    @property
    def is_agent(self) -> bool:
        return self.info.kind == models.ParticipantInfo.Kind.AGENT

    def snapshot(self) -> models.ParticipantInfo:
        """The ParticipantInfo to send, with the current track list and a fresh version."""
        self.info.version += 1
        del self.info.tracks[:]
        self.info.tracks.extend(t.info for t in self.tracks.values())
        self.info.is_publisher = bool(self.tracks)
        out = models.ParticipantInfo()
        out.CopyFrom(self.info)
        return out


RoomHook = Callable[["Room"], Awaitable[None]]


class Room:
    def __init__(self, name: str, config: room_pb.RoomConfiguration | None = None) -> None:
        config = config or room_pb.RoomConfiguration()
        now = time.time()
        self.proto = models.Room(
            sid=new_sid("RM_"),
            name=name,
            empty_timeout=config.empty_timeout or DEFAULT_EMPTY_TIMEOUT,
            departure_timeout=config.departure_timeout or DEFAULT_DEPARTURE_TIMEOUT,
            max_participants=config.max_participants,
            metadata=config.metadata,
            creation_time=int(now),
            creation_time_ms=int(now * 1000),
        )
        self.participants: dict[str, Participant] = {}
        self.dispatches: dict[str, agent_dispatch.AgentDispatch] = {}
        self.closed = False
        self._created_at = now
        self._last_left_at: float | None = None
        # Room-level agent dispatches from the configuration that created the room; an empty
        # list means "the default agent" (empty agent name), as in livekit-server.
        for rad in config.agents or [agent_dispatch.RoomAgentDispatch()]:
            self.add_dispatch(
                agent_dispatch.AgentDispatch(
                    id=new_sid("AD_"),
                    agent_name=rad.agent_name,
                    room=name,
                    metadata=rad.metadata,
                    attributes=dict(rad.attributes),
                )
            )

    @property
    def name(self) -> str:
        return self.proto.name

    def to_proto(self) -> models.Room:
        self.proto.num_participants = sum(1 for p in self.participants.values() if not p.hidden)
        self.proto.num_publishers = sum(1 for p in self.participants.values() if p.tracks)
        out = models.Room()
        out.CopyFrom(self.proto)
        return out

    def add_dispatch(self, dispatch: agent_dispatch.AgentDispatch) -> agent_dispatch.AgentDispatch:
        dispatch.state.created_at = time.time_ns()
        self.dispatches[dispatch.id] = dispatch
        return dispatch

    # -- membership -------------------------------------------------------------------------

    def others(self, participant: Participant | None) -> list[Participant]:
        return [p for p in self.participants.values() if p is not participant]

    def visible_others(self, participant: Participant) -> list[models.ParticipantInfo]:
        return [p.snapshot() for p in self.others(participant) if not p.hidden]

    async def add(self, participant: Participant) -> None:
        """Add a participant (replacing one with the same identity) and announce it."""
        old = self.participants.get(participant.identity)
        if old is not None:
            await self.remove(old, models.DisconnectReason.DUPLICATE_IDENTITY)
        self.participants[participant.identity] = participant
        self.broadcast_participant(participant)
        for other in self.others(participant):
            for track in other.tracks.values():
                if participant.auto_subscribe and track.media is not None:
                    self.subscribe(participant, track)

    async def remove(
        self,
        participant: Participant,
        reason: models.DisconnectReason.ValueType = models.DisconnectReason.CLIENT_INITIATED,
    ) -> None:
        """Remove a participant, tell the others, and disconnect its link."""
        if self.participants.get(participant.identity) is not participant:
            return
        del self.participants[participant.identity]
        for track in list(participant.tracks.values()):
            self.unpublish(track, notify=False)
        participant.info.state = models.ParticipantInfo.State.DISCONNECTED
        participant.info.disconnect_reason = reason
        if not participant.is_agent:
            self._last_left_at = time.time()
        self.broadcast_participant(participant)
        await participant.link.disconnect(reason)

    def broadcast_participant(self, participant: Participant) -> None:
        """Send the participant's current info to everybody in the room, itself included."""
        info = participant.snapshot()
        update = rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[info]))
        for p in self.participants.values():
            if p is participant or not participant.hidden:
                p.link.send_signal(update)

    def broadcast_room(self) -> None:
        msg = rtc.SignalResponse(room_update=rtc.RoomUpdate(room=self.to_proto()))
        for p in self.participants.values():
            p.link.send_signal(msg)

    # -- tracks -----------------------------------------------------------------------------

    def publish(self, track: PublishedTrack) -> None:
        """A track's media arrived: announce it and subscribe the others to it."""
        publisher = track.publisher
        publisher.tracks[track.info.sid] = track
        log.info("%s published %s (%s)", publisher.identity, track.info.sid, track.info.name)
        self.broadcast_participant(publisher)
        for p in self.others(publisher):
            if p.auto_subscribe and p.info.permission.can_subscribe:
                self.subscribe(p, track)

    def subscribe(self, subscriber: Participant, track: PublishedTrack) -> None:
        """Forward a track to a subscriber; tell the publisher on the first subscription, as livekit-server does
        (SignalResponse.track_subscribed). livekit-agents plays no agent speech until it has heard this."""
        subscriber.link.subscribe(track)
        log.info("%s subscribed to %s of %s", subscriber.identity, track.info.sid, track.publisher.identity)
        if not track.subscribed:
            track.subscribed = True
            log.info("%s: told that %s has a subscriber (track_subscribed)", track.publisher.identity, track.info.sid)
            track.publisher.link.send_signal(
                rtc.SignalResponse(track_subscribed=rtc.TrackSubscribed(track_sid=track.info.sid))
            )

    def unpublish(self, track: PublishedTrack, *, notify: bool = True) -> None:
        publisher = track.publisher
        if publisher.tracks.pop(track.info.sid, None) is None:
            return
        log.info("%s unpublished %s", publisher.identity, track.info.sid)
        for p in self.others(publisher):
            p.link.unsubscribe(track)
        if notify:
            publisher.link.send_signal(
                rtc.SignalResponse(track_unpublished=rtc.TrackUnpublishedResponse(track_sid=track.info.sid))
            )
            self.broadcast_participant(publisher)

    # -- data -------------------------------------------------------------------------------

    def forward_data(
        self,
        sender: Participant | None,
        kind: models.DataPacket.Kind.ValueType,
        packet: models.DataPacket,
    ) -> None:
        """Deliver a data packet to its destination identities (everybody else when none): the packet's own, else its
        user packet's (identities or sids), as livekit-server reads them.

        livekit-server's rules (pkg/rtc/participant.go): the sender's identity is stamped on every packet, except
        on a text stream's header that an agent sends on behalf of another participant (a user's transcript:
        the header keeps that identity and is marked `generated`); the deprecated `transcription` packet is
        forwarded only from agents."""
        if sender is not None:
            if packet.HasField("transcription") and not sender.is_agent:
                return
            if not _sent_on_behalf(sender, packet):
                packet.participant_identity = sender.identity
                packet.participant_sid = sender.sid
            if packet.HasField("user"):
                packet.user.participant_identity = sender.identity
                packet.user.participant_sid = sender.sid
        wanted = set(packet.destination_identities)
        addressed = bool(wanted)
        if not addressed and packet.HasField("user"):  # the legacy fields, which livekit-client's publishData fills
            user = packet.user
            addressed = bool(user.destination_identities or user.destination_sids)
            wanted = set(user.destination_identities)
            wanted |= {p.identity for p in self.participants.values() if p.sid in user.destination_sids}
        _log_rpc(sender, packet)
        payload = packet.SerializeToString()
        for p in self.others(sender):
            if not addressed or p.identity in wanted:
                p.link.send_data(kind, payload)

    # -- lifetime ---------------------------------------------------------------------------

    def idle_for_too_long(self, now: float) -> bool:
        """livekit-server's rule: only agents (or nobody) left, for longer than the timeout."""
        if any(not p.is_agent for p in self.participants.values()):
            return False
        if self._last_left_at is not None:
            return now - self._last_left_at >= self.proto.departure_timeout
        return now - self._created_at >= self.proto.empty_timeout

    async def close(self, reason: models.DisconnectReason.ValueType) -> None:
        self.closed = True
        for p in list(self.participants.values()):
            await self.remove(p, reason)  # the link tells the client why (a LeaveRequest)


def _sent_on_behalf(sender: Participant, packet: models.DataPacket) -> bool:
    """An agent's text stream header naming another participant: it keeps that name, marked as generated."""
    if not (sender.is_agent and packet.HasField("stream_header")):
        return False
    if packet.participant_identity in ("", sender.identity):
        return False
    if not packet.stream_header.HasField("text_header"):
        return False
    packet.stream_header.text_header.generated = True
    return True


def _log_rpc(sender: Participant | None, packet: models.DataPacket) -> None:
    """Log RPC traffic (one line a packet), so tests can tell RPC v1 packets from v2 streams."""
    which = packet.WhichOneof("value")
    if which in ("rpc_request", "rpc_ack", "rpc_response"):
        what = which
    elif which == "stream_header" and packet.stream_header.topic.startswith("lk.rpc"):
        what = f"stream_header {packet.stream_header.topic}"
    else:
        return
    source = sender.identity if sender else "server"
    log.info("data %s -> %s: %s", source, ",".join(packet.destination_identities) or "*", what)


class RoomManager:
    """All rooms of the server, created on demand and reaped when idle."""

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.on_room_created: list[RoomHook] = []
        self.on_room_closed: list[RoomHook] = []
        self._reaper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_idle_rooms())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for room in list(self.rooms.values()):
            await self.close(room, models.DisconnectReason.SERVER_SHUTDOWN)

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    async def get_or_create(self, name: str, config: room_pb.RoomConfiguration | None = None) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = Room(name, config)
            self.rooms[name] = room
            log.info("room %s created (%s)", name, room.proto.sid)
            for hook in self.on_room_created:
                await hook(room)
        return room

    async def close(self, room: Room, reason: models.DisconnectReason.ValueType) -> None:
        if self.rooms.get(room.name) is not room:
            return
        del self.rooms[room.name]
        log.info("room %s closed (%s)", room.name, models.DisconnectReason.Name(reason))
        for hook in self.on_room_closed:
            await hook(room)
        await room.close(reason)

    async def _reap_idle_rooms(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for room in list(self.rooms.values()):
                if room.idle_for_too_long(now):
                    await self.close(room, models.DisconnectReason.ROOM_CLOSED)
