"""Which room participant is the user the worker listens to, and which of the user's devices it hears.

The bridge and other agents are in the same room and must never be mistaken for the user (`agent.participants`
tells the roles apart).

One person may be in the room from several devices (`<user>-<device>` identities from the web page). The worker
hears one device at a time: the first present, then whichever starts speaking while the agent is not speaking
and the device it hears is not in the middle of a turn (`agent.devices`). Nothing is lost on a switch: a turn
belongs to the device that spoke it, and a waiting converse call takes the next turn from whichever device.
A device that joins receives the recent conversation (`agent.history`).
"""

from __future__ import annotations

import asyncio
import logging

from livekit import rtc
from livekit.agents import AgentSession

from .devices import DeviceAudioInput
from .history import TranscriptHistory
from .participants import is_user
from .protocol import ATTR_ROLE

logger = logging.getLogger(__name__)

AWAITING_USER = "voice-mcp:awaiting-user"
"""Placeholder identity that RoomIO never matches: the session starts unlinked and `UserLinker` links it."""


class UserLinker:
    """Keeps the session linked to one user device: the first one present, then the one that spoke last.

    The session must have been started with RoomIO's own audio input off (`RoomOptions(audio_input=False)`):
    `start()` installs a `DeviceAudioInput` in its place.
    """

    def __init__(self, room: rtc.Room, session: AgentSession, *, bridge_identity: str) -> None:
        self._room = room
        self._session = session
        self._room_io = session.room_io
        self._bridge_identity = bridge_identity
        self.history = TranscriptHistory()
        self.audio = DeviceAudioInput(
            room,
            is_device=lambda p: is_user(p, bridge_identity),
            on_speech=self._on_device_speech,
            quiet=lambda: session.agent_state == "speaking",
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self.switches = 0

    def start(self) -> None:
        self._room.on("participant_connected", self._on_connected)
        self._room.on("participant_active", self._on_active)
        self._room.on("participant_disconnected", self._on_disconnected)
        self._room.on("participant_attributes_changed", self._on_attributes_changed)
        self._room.on("disconnected", lambda *_: self._spawn(self.audio.aclose()))
        self.history.attach(
            self._session,
            user_identity=lambda: self.audio.active,
            agent_identity=lambda: self._room.local_participant.identity,
        )
        self._session.input.audio = self.audio
        self.audio.start()
        self._link_any()

    @property
    def linked(self) -> str | None:
        linked = self._room_io.linked_participant
        return linked.identity if linked is not None else None

    def _link_any(self) -> None:
        if self.linked is not None:
            self.audio.set_active(self.linked)
            return
        for participant in self._room.remote_participants.values():
            if is_user(participant, self._bridge_identity):
                self._link(participant.identity)
                return
        self.audio.set_active(None)

    def _link(self, identity: str) -> None:
        logger.info("listening to %s", identity)
        self._room_io.set_participant(identity)
        self.audio.set_active(identity)

    def _on_device_speech(self, identity: str) -> None:
        """Another device of the user started speaking: hear it instead, unless the current one is mid-turn."""
        if identity == self.linked:
            return
        if self.linked is not None and self._session.user_state == "speaking":
            return  # never two at once: the turn in progress finishes first
        participant = self._room.remote_participants.get(identity)
        if participant is None or not is_user(participant, self._bridge_identity):
            return
        self.switches += 1
        logger.info("device %s spoke; switching from %s", identity, self.linked)
        self._link(identity)

    def _spawn(self, work: object) -> None:
        task = asyncio.get_running_loop().create_task(work)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_connected(self, participant: rtc.RemoteParticipant) -> None:
        if not is_user(participant, self._bridge_identity):
            return
        self._spawn(self.history.send(self._room, participant.identity))
        # RoomIO re-links a device that comes back (a page reconnecting) by itself; the audio must follow
        if self.linked in (None, participant.identity):
            self._link(participant.identity)

    def _on_active(self, participant: rtc.RemoteParticipant) -> None:
        # On a server that tells when a participant can receive data, send again then: the history is a snapshot
        if is_user(participant, self._bridge_identity):
            self._spawn(self.history.send(self._room, participant.identity))

    def _on_disconnected(self, participant: rtc.RemoteParticipant) -> None:
        # RoomIO unlinks its participant in its own handler (registered earlier); link whoever is left
        self._link_any()

    def _on_attributes_changed(self, changed: dict[str, str], participant: rtc.Participant) -> None:
        if participant.identity == self.linked and changed.get(ATTR_ROLE):
            self._room_io.unset_participant()
            self._link_any()
