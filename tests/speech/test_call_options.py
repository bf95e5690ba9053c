"""Per-call voice, speed and language on real providers (`agent.speech.call_options`), as both paths use them."""

from __future__ import annotations

import pytest
from livekit.agents import tts

from agent.protocol import SpeakOptions
from agent.speech import EspeakTTS, FasterWhisperSTT, PiperTTS, build_tts, provider_label
from agent.speech.call_options import OptionRefused, call_options
from agent.speech.model_weights import BUNDLED_PIPER_VOICE
from tests.speech_fixtures import clean_settings

TEXT = "Checking the voice."


async def speak(engine: tts.TTS) -> None:
    frame = await engine.synthesize(TEXT).collect()
    assert frame.samples_per_channel > 0


async def test_a_voice_only_the_fallback_lacks_is_honoured_and_one_it_served_with_is_reported() -> None:
    chain = build_tts(clean_settings(tts=["espeak", "piper"]))  # espeak first, so it serves
    espeak = next(p for p in _providers(chain) if isinstance(p, EspeakTTS))

    with call_options(SpeakOptions(voice="en-gb"), tts_=chain) as options:  # espeak has it, Piper does not
        assert espeak.voice == "en-gb"
        await speak(chain)
        assert provider_label(chain) == "espeak"
        assert options.ignored(spoke=True, transcribed=False) == []
    assert espeak.voice == "en-us", "the configured voice is back after the call"

    with call_options(SpeakOptions(voice=BUNDLED_PIPER_VOICE), tts_=chain) as options:  # Piper's, not espeak's
        await speak(chain)
        assert provider_label(chain) == "espeak"
        assert options.ignored(spoke=True, transcribed=False) == ["voice"]
        assert options.ignored(spoke=False, transcribed=False) == [], "nothing spoken: nothing to report"
    await chain.aclose()


async def test_a_voice_no_provider_has_is_refused_and_nothing_stays_changed(piper: PiperTTS) -> None:
    espeak = EspeakTTS()
    with pytest.raises(OptionRefused) as caught:
        with call_options(SpeakOptions(voice="zz-no-voice", speed=1.5), tts_=espeak):
            pass
    assert caught.value.option == "voice" and "zz-no-voice" in str(caught.value)
    assert espeak.voice == "en-us" and espeak.speed == 1.0

    with pytest.raises(OptionRefused):
        with call_options(SpeakOptions(voice="/no/such/voice.onnx"), tts_=piper):
            pass
    assert piper.voice == BUNDLED_PIPER_VOICE


async def test_speed_is_set_for_the_call_and_restored(piper: PiperTTS) -> None:
    with call_options(SpeakOptions(speed=2.0), tts_=piper) as options:
        assert piper.speed == 2.0
        await speak(piper)
        assert options.ignored(spoke=True, transcribed=False) == []
    assert piper.speed == 1.0


async def test_an_english_only_model_refuses_another_language_and_takes_english(whisper: FasterWhisperSTT) -> None:
    assert whisper.english_only
    with pytest.raises(OptionRefused) as caught:
        with call_options(SpeakOptions(), language="de", stt_=whisper):
            pass
    assert caught.value.option == "language" and "English-only" in str(caught.value)
    assert "VOICE_MCP_STT_MODEL" in caught.value.fix
    with call_options(SpeakOptions(), language="en", stt_=whisper) as options:
        assert options.ignored(spoke=False, transcribed=True) == []
    assert whisper.language == "en"


def test_a_multilingual_model_takes_a_language_per_call() -> None:
    stt = FasterWhisperSTT(model="tiny")  # never loaded: only the options change
    with call_options(SpeakOptions(), language="de", stt_=stt):
        assert stt.language == "de"
    assert stt.language == "en"
    with pytest.raises(OptionRefused):
        with call_options(SpeakOptions(), language="klingon", stt_=stt):
            pass


def _providers(component: tts.TTS) -> list[tts.TTS]:
    from agent.speech.call_options import providers_behind

    return [p for p in providers_behind(component) if isinstance(p, tts.TTS)]
