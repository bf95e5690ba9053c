"""The agent's audio track is published only while the agent has something to say.

A published WebRTC audio track keeps capturing and Opus-encoding silence between utterances: about 3–4 % of a
core per room on the 2-core test machine (docs/performance.md), while muting the track saves nothing (libwebrtc
still encodes). `SpeakerTrack` unpublishes the agent's track once it has been quiet for `idle` seconds
(`VOICE_MCP_AGENT_TRACK_IDLE`), and publishes it again when the next speech is created (`speech_created`: `say()`
for converse, the LLM's replies). Synthesis goes on meanwhile; the speech's audio waits at a gate in front of the
track's output until the track is heard again.

When may the speech start? The server reports a subscription 250–800 ms before the subscriber can play the new
track (measured), and audio sent before that is never heard. So listeners say when a track's first audio reaches
them (`agent.protocol.TOPIC_TRACK_HEARD`: the web page does, any client may); the returned track carries silence
(an idle source sends nothing, so nothing would reach the listener to hear), and the speech starts
`HEARD_LEAD_IN_SECONDS` after a listener heard it (at most `RESUBSCRIBE_WAIT`). The track is taken away only while
such a listener is in the room: in a room without one it stays published, as livekit-agents leaves it, and a client
that cannot tell us when it hears costs its room the encoding of silence rather than a first word.

The gate is the track output's own `capture_frame`, wrapped: pausing livekit's output holds nothing, because
livekit resumes it before it forwards each speech (`AgentActivity._reconcile_playout_pause`): that is why the first
word was clipped whenever the synthesis was faster than the track's return. A track is never taken away while a
speech is under way or before anybody has subscribed to it (livekit's output still waits on that first
subscription). It works on livekit-agents' RoomIO audio output (`room_io.audio_output`): the track is re-created
over the same `rtc.AudioSource`, with the same name and publish options.
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
"""Default quiet time after which the track goes (`VOICE_MCP_AGENT_TRACK_IDLE`). Its return delays the next first
word by about half a second (publishing, the listener's word, `HEARD_LEAD_IN_SECONDS`, less the synthesis it
overlaps), so the default keeps the track through the pauses of a conversation (an assistant thinking between two
converse calls) and takes it from rooms left idle."""

RESUBSCRIBE_WAIT = 5.0
"""At most this long the output waits for a listener to hear the re-published track before it plays anyway."""

LEAD_IN_SECONDS = 0.5
"""Only when no listener in the room tells when it hears (it left while the track was away): silence the returned
track carries after the subscription before the speech (the subscriber's stream existed 250–320 ms after the
server's report at load 6–9, up to 800 ms under heavy load)."""

HEARD_LEAD_IN_SECONDS = 0.1
"""Silence after a listener heard the returned track, before the speech: a margin for the listener's playout of a
stream that has just started (the e2e test heard the whole first word in 6 of 6 runs with it, at load 1–6)."""

MAX_HEARD_TRACKS = 64
"""Track sids remembered as heard (one per return of the track): the oldest are forgotten beyond that."""


class SpeakerTrack:
    def __init__(self, session: AgentSession, room: rtc.Room, output: Any, *, idle: float = IDLE_SECONDS) -> None:
        """`output`: RoomIO's `audio_output` (with transcription sync on, a wrapper around the track's output);
        `idle`: quiet seconds before the track goes (0: never)."""
        self._idle = idle
        self._session = session
        self._room = room
        self._track_output = _track_output(output)  # livekit's _ParticipantAudioOutput: source, publication
        self._lock = asyncio.Lock()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._unpublished = False
        self._gate: asyncio.Future[None] | None = None
        """While the track is away: resolved once the speech may go out (`_gated_capture` waits on it)."""
        self._speeches = 0  # speech_created events so far: an unpublish decided before the latest one is void
        self._closed = False
        self._listeners: set[str] = set()
        """Identities in the room that said they heard one of our tracks (`TOPIC_TRACK_HEARD`); they leave it when
        they leave the room."""
        self._heard: dict[str, asyncio.Future[str]] = {}
        """Track sid → resolved with the identity of the first listener that heard it."""

    def start(self) -> None:
        output = self._track_output
        ungated = output.capture_frame

        async def _gated_capture(frame: rtc.AudioFrame) -> None:
            # every frame of a speech waits here while the track is away or coming back; shielded, so a speech
            # interrupted while it waits leaves the gate to the next one
            if self._gate is not None and not self._gate.done():
                await asyncio.shield(self._gate)
            await ungated(frame)

        output.capture_frame = _gated_capture  # the instance's own: livekit's output stays as it is otherwise
        self._session.on("agent_state_changed", self._on_state)
        self._session.on("speech_created", self._on_speech)
        self._room.on("data_received", self._on_data)
        self._room.on("participant_disconnected", self._on_participant_gone)
        self._arm()

    async def aclose(self) -> None:
        self._closed = True
        self._open_gate()  # nothing waits on a track that will not come back
        self._track_output.__dict__.pop("capture_frame", None)  # livekit's own again
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
            self._spawn(self._publish_again())  # synthesis goes on; the gate holds its audio until the track is back

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
        return bool(self._listeners)

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
            # close the gate first (`_gated_capture`). Pausing the output is no gate: livekit resumes it before it
            # forwards each speech (AgentActivity._reconcile_playout_pause), so the speech went out at once
            self._gate = asyncio.get_running_loop().create_future()
            try:
                await self._room.local_participant.unpublish_track(publication.sid)
            except BaseException:
                self._open_gate()
                raise
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
                source: rtc.AudioSource = output._audio_source
                # an idle source sends nothing: the listener hears the new track (and says so) only once audio
                # flows, so silence is fed until the speech may start
                feeder = asyncio.get_running_loop().create_task(_feed_silence(source))
                try:
                    track = rtc.LocalAudioTrack.create_audio_track(output._track_name, source)
                    publication = await self._room.local_participant.publish_track(track, output._publish_options)
                    output._publication = publication
                    self._unpublished = False
                    if self._listener_present():
                        await self._until_heard(publication.sid, started)
                    else:  # the listener left while the track was away: the old guess, subscription plus a lead-in
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(publication.wait_for_subscription(), RESUBSCRIBE_WAIT)
                        await asyncio.sleep(LEAD_IN_SECONDS)
                finally:
                    feeder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeder
        except Exception:
            logger.exception("could not publish the agent's audio track again")
        finally:
            self._open_gate()

    def _open_gate(self) -> None:
        if self._gate is not None and not self._gate.done():
            self._gate.set_result(None)

    async def _until_heard(self, sid: str, started: float) -> None:
        """Until a listener hears the track `sid` (its first audio is the silence `_feed_silence` captures)."""
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


SILENCE_FRAME_MS = 20


async def _feed_silence(source: rtc.AudioSource) -> None:
    """Capture silence into `source` in real time (about two frames queued at a time) until cancelled."""
    samples = source.sample_rate * SILENCE_FRAME_MS // 1000
    frame = rtc.AudioFrame(bytes(samples * 2 * source.num_channels), source.sample_rate, source.num_channels, samples)
    while True:
        await source.capture_frame(frame)
        await asyncio.sleep(max(0.0, source.queued_duration - 2 * SILENCE_FRAME_MS / 1000))


def _done(future: Any) -> bool:
    return isinstance(future, asyncio.Future) and future.done() and not future.cancelled()


def _track_output(output: Any) -> Any:
    """The output in the chain that owns the published track (the one with an `rtc.AudioSource`)."""
    while output is not None and not hasattr(output, "_audio_source"):
        output = getattr(output, "next_in_chain", None)
    if output is None:
        raise RuntimeError("RoomIO's audio output has no audio source (livekit-agents changed?)")
    return output
