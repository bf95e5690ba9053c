"""Speech keeps its words through the loopback server, as it would through a real SFU.

The same sentence is transcribed by the project's faster-whisper STT twice: from the synthesised
audio itself, and as a second participant receives it after the first one published it. Room tests
and room benchmarks hear what the server forwards, so the server must not make speech harder to
recognise than the publisher's own Opus encoding already does (it forwards Opus packets untouched).
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc

from agent.speech import EspeakTTS, FasterWhisperSTT, PiperTTS
from tests.transcripts import normalise, wer

from .helpers import SAMPLE_RATE, WAIT, Events, play_samples, record_until_quiet, rms, to_48k

pytestmark = [pytest.mark.livekit, pytest.mark.usefixtures("livekit_network")]

SENTENCE = "The weather is lovely today, so we will walk to the park after lunch. Bring a warm jacket and some water."
LEAD_IN = 0.5  # seconds of silence before the speech, so the codec has started when the words begin
# One word of this sentence: what a second whisper decode of the same words may differ by.
MARGIN = 1 / len(normalise(SENTENCE).split())


async def transcribe(whisper: FasterWhisperSTT, samples: np.ndarray) -> str:
    event = await whisper.recognize(rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, samples.size))
    return event.alternatives[0].text


@pytest.fixture(scope="session", params=["espeak", "piper"])
def speech(request: pytest.FixtureRequest) -> np.ndarray:
    """SENTENCE spoken by one of the project's voices, as 48 kHz int16 samples."""
    tts = EspeakTTS() if request.param == "espeak" else request.getfixturevalue("piper")
    assert isinstance(tts, EspeakTTS | PiperTTS)

    async def synthesize() -> rtc.AudioFrame:
        return await tts.synthesize(SENTENCE).collect()

    return to_48k(asyncio.run(synthesize()))


async def test_speech_has_the_same_word_error_rate_through_the_room(
    whisper, speech, livekit_server, livekit_connect, livekit_room_name
):
    direct_text = await transcribe(whisper, speech)
    direct_wer = wer(SENTENCE, direct_text)
    assert direct_wer <= 0.15, f"the voice itself is not recognised: {direct_text!r}"

    alice = await livekit_connect(livekit_server, "alice", livekit_room_name)
    bob = await livekit_connect(livekit_server, "bob", livekit_room_name)
    subscribed = Events(bob, "track_subscribed")
    source = rtc.AudioSource(SAMPLE_RATE, 1, queue_size_ms=100)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    await alice.local_participant.publish_track(track, options)
    remote_track, _, _ = await subscribed.next()

    spoken = np.concatenate([np.zeros(int(LEAD_IN * SAMPLE_RATE), dtype=np.int16), speech])
    sent, stop = asyncio.Event(), asyncio.Event()
    recording = asyncio.create_task(record_until_quiet(remote_track, sent, within=spoken.size / SAMPLE_RATE + WAIT))
    player = asyncio.create_task(play_samples(source, spoken, stop, sent))
    try:
        received = await recording
    finally:
        stop.set()
        await player
        await source.aclose()

    assert rms(received) > 0.5 * rms(speech / 32768), "the speech arrived much quieter than it was sent"
    room_text = await transcribe(whisper, (received * 32768).clip(-32768, 32767).astype(np.int16))
    room_wer = wer(SENTENCE, room_text)
    assert room_wer <= direct_wer + MARGIN, f"direct {direct_text!r} (WER {direct_wer:.2f}), room {room_text!r}"
