"""livekit.plugins.openai against a real OpenAI-compatible server on loopback (our models behind the API)."""

from __future__ import annotations

from livekit import rtc

from agent.speech import FasterWhisperSTT, build_one_stt, build_one_tts, provider_label
from agent.speech.openai_compat import PLACEHOLDER_API_KEY, OpenAISTT, OpenAITTS
from tests.speech_fixtures import clean_settings

from .conftest import SENTENCE
from .openai_compatible_server import OpenAICompatibleServer
from .test_roundtrip import wer


async def test_url_stt_transcribes_through_the_server(
    openai_server: OpenAICompatibleServer, piper_sentence: rtc.AudioFrame
) -> None:
    stt = build_one_stt(openai_server.base_url, clean_settings(stt=[openai_server.base_url]))
    try:
        event = await stt.recognize([piper_sentence])
    finally:
        await stt.aclose()

    assert wer(SENTENCE, event.alternatives[0].text) <= 0.15, event.alternatives[0].text
    assert ("POST", "/v1/audio/transcriptions") in openai_server.requests
    assert openai_server.auth_headers[-1] == f"Bearer {PLACEHOLDER_API_KEY}"  # no key needed for local servers
    assert provider_label(stt) == openai_server.base_url
    assert isinstance(stt, OpenAISTT) and stt.owned_client.is_closed()  # our client, closed with the provider


async def test_url_tts_speaks_through_the_server(
    openai_server: OpenAICompatibleServer, whisper: FasterWhisperSTT
) -> None:
    text = "Can you remind me to buy bread and eggs?"
    tts = build_one_tts(openai_server.base_url, clean_settings(tts=[openai_server.base_url]))
    try:
        frame = await tts.synthesize(text).collect()
    finally:
        await tts.aclose()

    assert ("POST", "/v1/audio/speech") in openai_server.requests
    assert frame.sample_rate == tts.sample_rate == 24000  # WAV from the server, decoded + resampled by livekit
    assert frame.duration > 1.0
    assert isinstance(tts, OpenAITTS) and tts.owned_client.is_closed()
    heard = (await whisper.recognize(frame)).alternatives[0].text
    assert wer(text, heard) <= 0.15, heard


async def test_openai_kind_uses_configured_base_url_and_key(
    openai_server: OpenAICompatibleServer, piper_sentence: rtc.AudioFrame
) -> None:
    settings = clean_settings(stt=["openai"], openai_base_url=openai_server.base_url, openai_api_key="sk-test-123")
    stt = build_one_stt("openai", settings)
    try:
        event = await stt.recognize(piper_sentence)
    finally:
        await stt.aclose()

    assert openai_server.auth_headers[-1] == "Bearer sk-test-123"
    assert wer(SENTENCE, event.alternatives[0].text) <= 0.15
    assert event.alternatives[0].language == "en"  # whisper-1 asks for verbose_json, which carries the language
    assert provider_label(stt) == "openai"
