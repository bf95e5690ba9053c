"""Embedded TTS behaviour: speaking rate, sentence-by-sentence delivery, espeak-ng as the last resort."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from livekit import rtc

from agent.speech import (
    EspeakTTS,
    FasterWhisperSTT,
    PiperTTS,
    ProviderUnavailable,
    build_tts,
    check_providers,
    provider_label,
    provider_labels,
)
from tests.speech_fixtures import clean_settings

from .conftest import synthesize
from .test_roundtrip import wer

MULTI_SENTENCE = (
    "This is the first sentence of a longer answer. "
    "Here comes a second sentence with a few more words in it. "
    "And finally a third sentence closes the message."
)


async def test_piper_speed_changes_duration(piper: PiperTTS) -> None:
    text = "Please call me back tomorrow morning."
    # Piper's phoneme durations are sampled (noise_w), so lengths vary by several percent from run to run: the
    # speeds are far apart and the bounds leave room (measured ratios: 2x speed ~0.68, half speed ~1.65).
    normal = await synthesize(PiperTTS(speed=1.0), text)
    fast = await synthesize(PiperTTS(speed=2.0), text)
    slow = await synthesize(PiperTTS(speed=0.5), text)

    assert fast.duration < normal.duration * 0.85
    assert slow.duration > normal.duration * 1.3


async def test_piper_first_audio_arrives_before_the_message_is_synthesised(piper: PiperTTS) -> None:
    stream = piper.synthesize(MULTI_SENTENCE)
    sentences_at_first_frame: int | None = None
    done_at_first_frame: bool | None = None
    frames: list[rtc.AudioFrame] = []
    async for audio in stream:
        if sentences_at_first_frame is None:
            sentences_at_first_frame = stream.sentences_done
            done_at_first_frame = stream.done
        frames.append(audio.frame)

    assert stream.sentences_done == 3
    assert sentences_at_first_frame is not None and sentences_at_first_frame < 3
    assert done_at_first_frame is False
    assert len(frames) > 3


async def test_piper_speech_round_trips_across_sentences(piper: PiperTTS, whisper: FasterWhisperSTT) -> None:
    frame = await synthesize(piper, MULTI_SENTENCE)
    heard = (await whisper.recognize(frame)).alternatives[0].text
    assert wer(MULTI_SENTENCE, heard) <= 0.15, heard


async def test_espeak_is_intelligible(whisper: FasterWhisperSTT) -> None:
    text = "Please call me back tomorrow morning. Can you remind me to buy bread and eggs?"
    frame = await synthesize(EspeakTTS(), text)

    assert frame.sample_rate == 22050 and frame.duration > 2.0
    heard = (await whisper.recognize(frame)).alternatives[0].text
    assert wer(text, heard) <= 0.25, heard  # robotic voice, tiny model: a little slack


async def test_espeak_speed_changes_duration() -> None:
    text = "The meeting starts at nine on Monday."
    normal = await synthesize(EspeakTTS(speed=1.0), text)
    fast = await synthesize(EspeakTTS(speed=1.5), text)
    assert fast.duration < normal.duration * 0.8


def test_missing_voice_and_binary_say_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ProviderUnavailable, match="VOICE_MCP_TTS_VOICE") as voice_error:
        PiperTTS(voice=str(tmp_path / "nope.onnx"))
    assert voice_error.value.provider == "piper"

    monkeypatch.setenv("PATH", str(tmp_path))  # no espeak-ng on this PATH
    with pytest.raises(ProviderUnavailable, match="apt-get install espeak-ng"):
        EspeakTTS()


async def test_without_piper_tts_installed_espeak_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    """piper-tts (GPL) comes only with the offline extra; without it, Piper is skipped with the fix."""
    monkeypatch.setitem(sys.modules, "piper", None)  # `import piper` now fails, as when it is not installed

    with pytest.raises(ProviderUnavailable, match=re.escape("pip install 'voice-mcp-bridge[offline]'")) as missing:
        PiperTTS()
    assert missing.value.provider == "piper" and "piper-tts is not installed" in missing.value.problem

    settings = clean_settings(tts=["piper", "espeak"])
    tts = build_tts(settings)
    assert isinstance(tts, EspeakTTS) and provider_labels(tts) == ["espeak"]
    frame = await synthesize(tts, "Good morning.")
    assert frame.duration > 0.3 and provider_label(tts) == "espeak"

    piper_status = next(s for s in await check_providers(settings) if s.name == "piper")
    assert not piper_status.available and piper_status.fix and "voice-mcp-bridge[offline]" in piper_status.fix
