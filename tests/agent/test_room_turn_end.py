"""When the worker's session ends a turn whose last segment is still being transcribed.

The real worker session (`build_room_session`, `VoiceMcpAgent`: real Silero, real faster-whisper, Piper speech
fed in real time at 16 kHz in 50 ms frames), with the STT held back on purpose (`HeldSTT`) so the user's audio
and the transcription overlap the way they do on a busy machine:

- a user who speaks again while the last segment is transcribed still gets one whole turn (not cut off);
- otherwise the session counts the silence from the real end of speech (the END_OF_SPEECH is dated back across
  the wait for the transcript), so the endpointing delay overlaps the transcription instead of following it.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from livekit.agents import APIConnectOptions, stt, vad
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer

from agent.speech import FasterWhisperSTT, PiperTTS
from tests.agent.test_room_turns import (
    AFTER_THE_PAUSE,
    BEFORE_THE_PAUSE,
    RATE,
    heard,
    run_worker_session,
    speech_16k,
    words,
)
from tests.speech_fixtures import clean_settings


class HeldSTT(stt.STT):
    """The real Whisper, whose first transcript comes out only once `release` is set (Whisper slow to finish)."""

    def __init__(self, inner: FasterWhisperSTT, release: asyncio.Event) -> None:
        super().__init__(capabilities=inner.capabilities)
        self._inner = inner
        self._release = release
        self.calls = 0

    async def _recognize_impl(
        self, buffer: AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions
    ) -> stt.SpeechEvent:
        self.calls += 1
        event = await self._inner.recognize(buffer, language=language, conn_options=conn_options)
        if self.calls == 1:
            await self._release.wait()
        return event


async def test_a_user_who_speaks_again_while_the_last_segment_is_transcribed_gets_one_whole_turn(
    whisper: FasterWhisperSTT, piper: PiperTTS
) -> None:
    """The first segment's transcript comes out the moment Silero first hears the user again (before its
    START_OF_SPEECH): the 600 ms silence rule has passed since the first segment ended (a 1 s pause), yet the
    turn is not ended there."""
    first = await speech_16k(piper, "We could move the meeting")
    second = await speech_16k(piper, "to Thursday afternoon instead.")
    gap = np.zeros(int(RATE * 1.0), dtype=np.int16)
    audio = np.concatenate([np.zeros(RATE // 2, dtype=np.int16), first, gap, second])
    release = asyncio.Event()
    ended = False

    def on_vad(event: vad.VADEvent) -> None:
        nonlocal ended
        if event.type == vad.VADEventType.END_OF_SPEECH:
            ended = True
        elif ended and event.type == vad.VADEventType.INFERENCE_DONE and event.raw_accumulated_speech > 0:
            release.set()  # the user is speaking again: only now does the first segment's transcript come out

    settings = clean_settings(silence_ms=600, turn_detection="silence")
    recognizer = HeldSTT(whisper, release)
    turns = await run_worker_session(audio, settings, recognizer, piper, silence_after=3.0, on_vad=on_vad)

    assert release.is_set() and recognizer.calls >= 2
    assert len(turns) == 1, [t.text for t in turns]
    assert heard(turns[0].text, BEFORE_THE_PAUSE) and heard(turns[0].text, AFTER_THE_PAUSE), turns[0].text


async def test_the_silence_is_counted_from_the_real_end_of_speech_not_from_the_transcript(
    whisper: FasterWhisperSTT, piper: PiperTTS
) -> None:
    """The only segment's transcription is held 0.8 s past the VAD's end of speech: the turn the session commits
    still says the user stopped speaking where the VAD heard it (its endpointing delay ran during the wait)."""
    reply = await speech_16k(piper, "Sounds good to me.")
    audio = np.concatenate([np.zeros(RATE // 2, dtype=np.int16), reply])
    release = asyncio.Event()
    vad_ended: list[float] = []

    def on_vad(event: vad.VADEvent) -> None:
        if event.type == vad.VADEventType.END_OF_SPEECH:
            vad_ended.append(time.time() - event.silence_duration - event.inference_duration)
            asyncio.get_running_loop().call_later(0.8, release.set)  # Whisper "takes" 0.8 s more

    settings = clean_settings(silence_ms=1000, turn_detection="silence")
    turns = await run_worker_session(
        audio, settings, HeldSTT(whisper, release), piper, silence_after=3.0, on_vad=on_vad
    )

    assert len(turns) == 1 and {"sounds", "good"} <= set(words(turns[0].text)), [t.text for t in turns]
    stopped = turns[0].stopped_speaking_at
    assert stopped is not None and len(vad_ended) == 1
    # dated at the VAD's end of speech, not at the transcript (0.8 s later) minus the VAD's 250 ms pause
    assert abs(stopped - vad_ended[0]) < 0.2, (stopped - vad_ended[0])
