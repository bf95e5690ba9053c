"""Which room participant is the user the worker listens to.

The bridge and other agents are in the same room and must never be mistaken for the user. The bridge is
recognised by its identity (settings.bridge_identity) or its `voice-mcp.role` attribute, workers by their
identity prefix, role attribute or participant kind, so this works even on a server that drops attributes.
"""

from __future__ import annotations

import logging

from livekit import rtc
from livekit.agents.voice.room_io import RoomIO

from .protocol import ATTR_ROLE, WORKER_IDENTITY_PREFIX

logger = logging.getLogger("voice-mcp.worker")

USER_KINDS = (
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
    rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR,
)
AWAITING_USER = "voice-mcp:awaiting-user"
"""Placeholder identity that RoomIO never matches: the session starts unlinked and `UserLinker` links it."""


def is_user(participant: rtc.RemoteParticipant, bridge_identity: str) -> bool:
    if participant.identity == bridge_identity or participant.identity.startswith(WORKER_IDENTITY_PREFIX):
        return False
    if participant.attributes.get(ATTR_ROLE) in ("bridge", "worker"):
        return False
    return participant.kind in USER_KINDS


class UserLinker:
    """Keeps the session's RoomIO linked to a user: the first one present, then whoever joins when none is."""

    def __init__(self, room: rtc.Room, room_io: RoomIO, *, bridge_identity: str) -> None:
        self._room = room
        self._room_io = room_io
        self._bridge_identity = bridge_identity

    def start(self) -> None:
        self._room.on("participant_connected", self._on_connected)
        self._room.on("participant_disconnected", self._on_disconnected)
        self._room.on("participant_attributes_changed", self._on_attributes_changed)
        self._link_any()

    def _link_any(self) -> None:
        if self._room_io.linked_participant is not None:
            return
        for participant in self._room.remote_participants.values():
            if is_user(participant, self._bridge_identity):
                self._link(participant)
                return

    def _link(self, participant: rtc.RemoteParticipant) -> None:
        logger.info("listening to %s", participant.identity)
        self._room_io.set_participant(participant.identity)

    def _on_connected(self, participant: rtc.RemoteParticipant) -> None:
        if self._room_io.linked_participant is None and is_user(participant, self._bridge_identity):
            self._link(participant)

    def _on_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        # RoomIO unlinks its participant in its own handler (registered earlier); link whoever is left
        self._link_any()

    def _on_attributes_changed(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        linked = self._room_io.linked_participant
        if linked is not None and linked.identity == participant.identity and changed.get(ATTR_ROLE):
            self._room_io.unset_participant()
            self._link_any()
