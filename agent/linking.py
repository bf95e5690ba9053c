"""Which room participant is the user the worker listens to.

The bridge and other agents are in the same room and must never be mistaken for the user (`agent.participants`
tells the roles apart).
"""

from __future__ import annotations

import logging

from livekit import rtc
from livekit.agents.voice.room_io import RoomIO

from .participants import is_user
from .protocol import ATTR_ROLE

logger = logging.getLogger(__name__)

AWAITING_USER = "voice-mcp:awaiting-user"
"""Placeholder identity that RoomIO never matches: the session starts unlinked and `UserLinker` links it."""


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
