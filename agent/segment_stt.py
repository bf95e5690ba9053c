"""The worker's STT node: transcribe each speech segment the session's VAD closes, in the user's short pauses.

The session's VAD (a `TappedVAD`) ends a segment after a short pause (`agent.turn_taking.PAUSE_MS`); its
`END_OF_SPEECH` event carries the segment's audio, which goes straight to `stt.recognize` (the configured
provider, or the failover chain of `agent.speech.build_stt`). The transcript of every segment is therefore ready
a few hundred milliseconds after that pause, usually before the turn ends (the end-of-turn decision, see
`agent.turn_taking`, waits longer than the pause): the room path pays no STT after the turn, as the local loop.
livekit-agents collects the segments' final transcripts into the user's turn and commits it at the end of turn.

Segments are transcribed one at a time, in order. The node drains the audio the session hands it (the VAD
already has every frame), so nothing queues up, and ends when that audio ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator

from livekit import rtc
from livekit.agents import stt, utils, vad

from .speech.vad_tap import TappedVAD

logger = logging.getLogger(__name__)

MAX_PENDING_SEGMENTS = 64
"""Segments waiting for STT at most (about a minute of continuous short phrases): beyond that the oldest waits
are dropped with an error in the log rather than memory growing without bound."""


async def transcribe_segments(
    audio: AsyncIterable[rtc.AudioFrame], *, segments: TappedVAD, recognizer: stt.STT
) -> AsyncIterator[stt.SpeechEvent]:
    """Speech events for the session: START/END_OF_SPEECH and one FINAL_TRANSCRIPT per transcribed segment."""
    # (event, resolved once its transcript is out) in order; None: the audio input ended
    pending: asyncio.Queue[tuple[vad.VADEvent, asyncio.Future[None] | None] | None] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def on_event(event: vad.VADEvent) -> None:
        if event.type == vad.VADEventType.INFERENCE_DONE:
            return
        if pending.qsize() >= MAX_PENDING_SEGMENTS:
            logger.error("STT is %d segments behind; the oldest is skipped", pending.qsize())
            skipped = pending.get_nowait()
            if skipped is not None and skipped[1] is not None and not skipped[1].done():
                skipped[1].set_result(None)
        done: asyncio.Future[None] | None = None
        if event.type == vad.VADEventType.END_OF_SPEECH:
            done = loop.create_future()
            segments.hold(done)  # the session ends no turn before this segment's transcript is out
        pending.put_nowait((event, done))

    async def drain() -> None:
        async for _frame in audio:
            pass
        pending.put_nowait(None)

    unsubscribe = segments.subscribe(on_event)
    drainer = asyncio.create_task(drain(), name="voice-mcp.stt-drain")
    try:
        while (item := await pending.get()) is not None:
            event, done = item
            if event.type == vad.VADEventType.START_OF_SPEECH:
                yield stt.SpeechEvent(type=stt.SpeechEventType.START_OF_SPEECH)
                continue
            try:
                speech_end_time = time.time() - event.silence_duration - event.inference_duration
                yield stt.SpeechEvent(type=stt.SpeechEventType.END_OF_SPEECH, speech_end_time=speech_end_time)
                transcript = await _recognize(recognizer, event.frames)
                segments.stages.transcript = time.time()
                if transcript is not None:
                    yield stt.SpeechEvent(
                        type=stt.SpeechEventType.FINAL_TRANSCRIPT,
                        alternatives=[transcript],
                        speech_end_time=speech_end_time,
                    )
            finally:
                if done is not None and not done.done():
                    done.set_result(None)
    finally:
        while not pending.empty():  # release the session's held ends of speech
            item = pending.get_nowait()
            if item is not None and item[1] is not None and not item[1].done():
                item[1].set_result(None)
        unsubscribe()
        drainer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await drainer


async def _recognize(recognizer: stt.STT, frames: list[rtc.AudioFrame]) -> stt.SpeechData | None:
    if not frames:
        return None
    try:
        event = await recognizer.recognize(buffer=utils.merge_frames(frames))
    except Exception as exc:  # every provider failed: the session reports it; the next segment tries again
        logger.error("transcribing a speech segment failed: %s", exc)
        return None
    if not event.alternatives or not event.alternatives[0].text.strip():
        return None
    return event.alternatives[0]
