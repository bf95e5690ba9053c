"""The agent's audio track is published only while the agent has something to say.

A published WebRTC audio track keeps capturing and Opus-encoding silence between utterances: about 4 % of a
core per room on the 2-core test machine (docs/performance.md), while muting the track saves nothing (libwebrtc
still encodes). `SpeakerTrack` unpublishes the agent's track once it has been quiet for `IDLE_SECONDS`, and
publishes it again when the next speech is created (`speech_created`: `say()` for converse, the LLM's replies).
While the track comes back the room output is paused, so TTS synthesis goes on but no audio is played into a
track nobody hears yet; the wait overlaps the synthesis of the first sentence.

When may the speech start? The server reports a subscription 250–800 ms before the subscriber can play the new
track (measured), and what is sent meanwhile is never heard: a fixed lead-in after the subscription lost up to
300 ms of the first word at load 10–20. So listeners say when a track's first audio reaches them
(`agent.protocol.TOPIC_TRACK_HEARD`: the web page does, any client may). The track is taken away only while such a
listener is in the room; when it comes back, the speech starts as soon as one of them has heard the new track
(at most `RESUBSCRIBE_WAIT`). In a room without one, the track stays published, as livekit-agents leaves it: a
client that cannot tell us when it hears costs its room the encoding of silence rather than a first word.

A track is never taken away while a speech is under way or before anybody has subscribed to it (livekit's output
still waits on that first subscription). It works on livekit-agents' RoomIO audio output
(`room_io.audio_output`): the track is re-created over the same `rtc.AudioSource`, with the same name and publish
options.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.events import AgentStateChangedEvent, SpeechCreatedEvent
from pydantic import ValidationError

from .protocol import TOPIC_TRACK_HEARD, TrackHeard

logger = logging.getLogger(__name__)

IDLE_SECONDS = 120.0
"""Default quiet time after which the track goes (`VOICE_MCP_AGENT_TRACK_IDLE`). Its return costs the next first
word about a second (the listener's ack, then `HEARD_LEAD_IN_SECONDS`), so the default keeps the track through
the pauses of a conversation (an assistant thinking between two converse calls) and takes it from rooms left
idle."""

RESUBSCRIBE_WAIT = 5.0
"""At most this long the output waits for a listener to hear the re-published track before it plays anyway."""

LEAD_IN_SECONDS = 0.5
"""Only when no listener in the room tells when it hears (it left while the track was away): silence the returned
track carries after the subscription before the speech (the subscriber's stream existed 250–320 ms after the
server's report at load 6–9, up to 800 ms under heavy load)."""

HEARD_LEAD_IN_SECONDS = 1.0
"""Silence after a listener heard the returned track, before the speech. The listener's playout of a new stream is
still settling after its first audio: measured on the audio the e2e user received, speech that started 0.25 or
0.5 s after the ack lost 30–60 ms of its first word in 3 of 5 runs, 1.0 s after it none in 2 (the track that stays
published: 0–10 ms)."""

MAX_HEARD_TRACKS = 64
"""Track sids remembered as heard (one per return of the track): the oldest are forgotten beyond that."""


class SpeakerTrack:
    def __init__(self, session: AgentSession, room: rtc.Room, output: Any, *, idle: float = IDLE_SECONDS) -> None:
        """`output`: RoomIO's `audio_output` (with transcription sync on, a wrapper around the track's output);
        `idle`: quiet seconds before the track goes (0: never)."""
        self._idle = idle
        self._session = session
        self._room = room
        self._output = output  # paused and resumed through the public chain (the wrapper passes it on)
        self._track_output = _track_output(output)  # livekit's _ParticipantAudioOutput: source, publication
        self._lock = asyncio.Lock()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unpublished = False
        self._speeches = 0  # speech_created events so far: an unpublish decided before the latest one is void
        self._closed = False
        self._listeners: set[str] = set()
        """Identities in the room that said they heard one of our tracks (`TOPIC_TRACK_HEARD`)."""
        self._heard: dict[str, asyncio.Future[str]] = {}
        """Track sid → resolved with the identity of the first listener that heard it."""
        self.republish_seconds: list[float] = []  # how long each return took (publish until the speech may start)

    def start(self) -> None:
        self._session.on("agent_state_changed", self._on_state)
        self._session.on("speech_created", self._on_speech)
        self._room.on("data_received", self._on_data)
        self._room.on("participant_disconnected", self._on_participant_gone)
        self._arm()

    async def aclose(self) -> None:
        self._closed = True
        self._session.off("agent_state_changed", self._on_state)
        self._session.off("speech_created", self._on_speech)
        self._room.off("data_received", self._on_data)
        self._room.off("participant_disconnected", self._on_participant_gone)
        self._disarm()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def published(self) -> bool:
        return not self._unpublished

    # --- events -------------------------------------------------------------------------------------------------
    def _on_state(self, event: AgentStateChangedEvent) -> None:
        if event.new_state == "speaking":
            self._disarm()
        else:
            self._arm()

    def _on_speech(self, event: SpeechCreatedEvent) -> None:
        self._speeches += 1
        self._disarm()
        if self._unpublished or self._lock.locked():  # gone, or an unpublish is under way
            self._output.pause()  # synthesis goes on; nothing plays until the track is back
            self._spawn(self._publish_again())

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != TOPIC_TRACK_HEARD or packet.participant is None:
            return
        try:
            heard = TrackHeard.model_validate_json(packet.data)
        except ValidationError:
            logger.warning("ignored a malformed %s packet from %s", TOPIC_TRACK_HEARD, packet.participant.identity)
            return
        identity = packet.participant.identity
        if identity not in self._listeners:
            logger.info("%s tells when it hears the agent's track: the track may go while the agent is quiet", identity)
        self._listeners.add(identity)
        future = self._heard_future(heard.track_sid)
        if not future.done():
            future.set_result(identity)

    def _on_participant_gone(self, participant: rtc.RemoteParticipant) -> None:
        self._listeners.discard(participant.identity)

    def _heard_future(self, sid: str) -> asyncio.Future[str]:
        future = self._heard.get(sid)
        if future is None:
            while len(self._heard) >= MAX_HEARD_TRACKS:
                oldest = next(iter(self._heard))
                self._heard.pop(oldest).cancel()
            future = self._heard[sid] = asyncio.get_running_loop().create_future()
        return future

    def _listener_present(self) -> bool:
        present = {p.identity for p in self._room.remote_participants.values()}
        return bool(self._listeners & present)

    # --- publishing ---------------------------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        if not self._closed and not self._unpublished and self._idle > 0:
            self._idle_timer = asyncio.get_running_loop().call_later(self._idle, self._on_idle)

    def _disarm(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _on_idle(self) -> None:
        self._idle_timer = None
        if self._session.agent_state == "speaking" or self._session.current_speech is not None:
            self._arm()  # a speech is under way (perhaps waiting for a subscriber): its track stays
            return
        if not _done(getattr(self._track_output, "subscribed", None)):
            # nobody has subscribed yet: livekit's output still waits on this publication's first subscription,
            # and a track taken away now would leave that wait (and the room's audio) hanging for good
            self._arm()
            return
        if not self._listener_present():
            self._arm()  # nobody here could tell us when the track is back: it stays (checked again later)
            return
        self._spawn(self._unpublish(self._speeches))

    async def _unpublish(self, speeches: int) -> None:
        async with self._lock:
            publication = self._publication()
            if publication is None and not self._unpublished:
                self._arm()  # RoomIO has not published its track yet (it waits for the first subscriber)
                return
            if self._unpublished or publication is None or self._speeches != speeches:
                return
            await self._room.local_participant.unpublish_track(publication.sid)
            self._unpublished = True
            logger.debug("agent audio track unpublished while quiet")

    async def _publish_again(self) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with self._lock:
                if not self._unpublished:
                    return
                output = self._track_output
                track = rtc.LocalAudioTrack.create_audio_track(output._track_name, output._audio_source)
                publication = await self._room.local_participant.publish_track(track, output._publish_options)
                output._publication = publication
                self._unpublished = False
                if self._listener_present():
                    await self._until_heard(publication.sid, started)
                else:  # the listener left while the track was away: the old guess, subscription plus a lead-in
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(publication.wait_for_subscription(), RESUBSCRIBE_WAIT)
                    await asyncio.sleep(LEAD_IN_SECONDS)  # the source sends silence meanwhile
                self.republish_seconds.append(loop.time() - started)
        except Exception:
            logger.exception("could not publish the agent's audio track again")
        finally:
            self._output.resume()

    async def _until_heard(self, sid: str, started: float) -> None:
        """Until a listener hears the track `sid` (its first audio is silence from the paused output)."""
        try:
            listener = await asyncio.wait_for(asyncio.shield(self._heard_future(sid)), RESUBSCRIBE_WAIT)
        except TimeoutError:
            logger.warning("no listener heard the agent's returned track within %.0f s; speaking", RESUBSCRIBE_WAIT)
        else:
            elapsed = asyncio.get_running_loop().time() - started
            logger.info("agent audio track published again: %s hears it after %.0f ms", listener, elapsed * 1000)
            await asyncio.sleep(HEARD_LEAD_IN_SECONDS)

    def _publication(self) -> rtc.LocalTrackPublication | None:
        publication = getattr(self._track_output, "_publication", None)
        if publication is None or publication.sid not in self._room.local_participant.track_publications:
            return None
        return publication

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("the agent's audio track could not be changed", exc_info=task.exception())


def _done(future: Any) -> bool:
    return isinstance(future, asyncio.Future) and future.done() and not future.cancelled()


def _track_output(output: Any) -> Any:
    """The output in the chain that owns the published track (the one with an `rtc.AudioSource`)."""
    while output is not None and not hasattr(output, "_audio_source"):
        output = getattr(output, "next_in_chain", None)
    if output is None:
        raise RuntimeError("RoomIO's audio output has no audio source (livekit-agents changed?)")
    return output
