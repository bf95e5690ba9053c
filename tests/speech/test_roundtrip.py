"""Embedded providers end to end: Piper speaks, faster-whisper listens, and the words survive."""

from __future__ import annotations

import numpy as np
from livekit import rtc
from livekit.agents import stt as lk_stt

from agent.speech import FasterWhisperSTT, PiperTTS, build_stt, build_tts, provider_label
from tests.speech_fixtures import clean_settings
from tests.transcripts import wer

from .conftest import SENTENCE, synthesize


async def test_piper_to_whisper_round_trip(whisper: FasterWhisperSTT, piper_sentence: rtc.AudioFrame) -> None:
    assert piper_sentence.sample_rate == 22050
    assert piper_sentence.duration > 2.0

    event = await whisper.recognize(piper_sentence)

    assert event.type == lk_stt.SpeechEventType.FINAL_TRANSCRIPT
    text = event.alternatives[0].text
    assert wer(SENTENCE, text) <= 0.15, text
    assert event.alternatives[0].language == "en"
    assert event.alternatives[0].end_time > 2.0


async def test_builders_default_to_embedded_providers() -> None:
    settings = clean_settings(tts=["piper"])
    tts = build_tts(settings)
    stt = build_stt(settings)
    assert isinstance(tts, PiperTTS) and isinstance(stt, FasterWhisperSTT)

    frame = await synthesize(tts, "Please call me back tomorrow morning.")
    event = await stt.recognize([frame])

    assert wer("please call me back tomorrow morning", event.alternatives[0].text) <= 0.15
    assert provider_label(tts) == "piper" and provider_label(stt) == "faster-whisper"


async def test_whisper_accepts_stereo_48k_frames(whisper: FasterWhisperSTT, piper_sentence: rtc.AudioFrame) -> None:
    """Input of any rate/channel count is resampled to 16 kHz mono (here: what a LiveKit track delivers)."""
    mono = np.frombuffer(piper_sentence.data, dtype=np.int16)
    resampler = rtc.AudioResampler(22050, 48000, num_channels=1)
    up = np.concatenate(
        [np.frombuffer(f.data, dtype=np.int16) for f in [*resampler.push(piper_sentence), *resampler.flush()]]
    )
    stereo = np.repeat(up, 2)
    frames = [
        rtc.AudioFrame(stereo[i : i + 960 * 2].tobytes(), 48000, 2, len(stereo[i : i + 960 * 2]) // 2)
        for i in range(0, stereo.size, 960 * 2)
    ]
    assert mono.size > 0

    event = await whisper.recognize(frames)

    assert wer(SENTENCE, event.alternatives[0].text) <= 0.15, event.alternatives[0].text
