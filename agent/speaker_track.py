"""The agent's audio track is published only while the agent has something to say.

A published WebRTC audio track keeps capturing and Opus-encoding silence between utterances: about 4 % of a
core per room on the 2-core test machine (docs/performance.md), while muting the track saves nothing (libwebrtc
still encodes). `SpeakerTrack` unpublishes the agent's track once it has been quiet for `IDLE_SECONDS`, and
publishes it again when the next speech is created (`speech_created`: `say()` for converse, the LLM's replies).
While the track comes back the room output is paused, so TTS synthesis goes on but no audio is played into a
track nobody has subscribed to yet: the first word is never lost; the wait (publishing plus the subscriber's
subscription, bounded by `RESUBSCRIBE_WAIT`) overlaps the synthesis of the first sentence.

NOT WIRED INTO THE WORKER: the first word after the track comes back is not reliably whole. The server reports the
subscription before the subscriber can play the new track, and what arrives meanwhile is never heard. The output
resumes only `LEAD_IN_SECONDS` after the subscription, the track carrying silence meanwhile: judged by
`tests/e2e_livekit/test_livekit_audio_path.py` on the audio the user receives, that passed 5 of 5 runs at load 5–9
but lost 80–300 ms of the first word in 2 of 4 runs at load 10–20 (docs/performance.md). A track is never
taken away while a speech is under way or before anybody has subscribed to it (livekit's output still waits on
that first subscription).

It works on livekit-agents' RoomIO audio output (`room_io.audio_output`): the track is re-created over the same
`rtc.AudioSource`, with the same name and publish options.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from livekit import rtc
from livekit.agents import AgentSession
from livekit.agents.voice.events import AgentStateChangedEvent, SpeechCreatedEvent

logger = logging.getLogger(__name__)

IDLE_SECONDS = 15.0
"""Quiet time after which the track is unpublished: the user's reply and the assistant's thinking between two
converse calls usually fit in it, so only a room quiet for longer pays the track's return before its first word."""

RESUBSCRIBE_WAIT = 5.0
"""At most this long the output waits for the re-published track's subscriber before it plays anyway."""

LEAD_IN_SECONDS = 0.5
"""Silence the re-published track carries before the speech. The server reports the subscription before the
subscriber can play the new track: its stream existed 250–320 ms later in the end-to-end test at load 6–9, and
600–700 ms later with the whole test squeezed into half a core; whatever arrives before that is never heard.
The wait overlaps the synthesis of the first sentence (docs/performance.md, rows `first_audio_room_*_after_quiet`)."""


class SpeakerTrack:
    def __init__(self, session: AgentSession, room: rtc.Room, output: Any) -> None:
        """`output`: RoomIO's `audio_output` (with transcription sync on, a wrapper around the track's output)."""
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
        self.republish_seconds: list[float] = []  # how long each return took (publish + subscription)

    def start(self) -> None:
        self._session.on("agent_state_changed", self._on_state)
        self._session.on("speech_created", self._on_speech)
        self._arm()

    async def aclose(self) -> None:
        self._closed = True
        self._session.off("agent_state_changed", self._on_state)
        self._session.off("speech_created", self._on_speech)
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

    # --- publishing ---------------------------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        if not self._closed and not self._unpublished:
            self._idle_timer = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._on_idle)

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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(publication.wait_for_subscription(), RESUBSCRIBE_WAIT)
                subscribed = loop.time() - started
                await asyncio.sleep(LEAD_IN_SECONDS)  # the source sends silence meanwhile
                self.republish_seconds.append(loop.time() - started)
                logger.info(
                    "agent audio track published again: subscribed after %.0f ms, speech after %.0f ms of lead-in",
                    subscribed * 1000,
                    LEAD_IN_SECONDS * 1000,
                )
        except Exception:
            logger.exception("could not publish the agent's audio track again")
        finally:
            self._output.resume()

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
