"""Failover through livekit's FallbackAdapters: order respected, the label names who answered, no hangs."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, APITimeoutError, stt, tts

from agent.speech import build_one_stt, build_stt, build_tts, provider_label, provider_labels
from agent.speech.failover import FallbackSTT
from tests.speech_fixtures import clean_settings

from .conftest import SENTENCE
from .openai_compatible_server import OpenAICompatibleServer, SilentServer, closed_port_url
from .test_roundtrip import wer

HANG_GUARD = 120  # seconds; only there to turn a hang into a failure, not a performance limit


async def test_stt_dead_url_fails_over_to_embedded(piper_sentence: rtc.AudioFrame) -> None:
    dead = closed_port_url()
    adapter = build_stt(clean_settings(stt=[dead, "faster-whisper"], provider_timeout=2))
    assert isinstance(adapter, FallbackSTT) and isinstance(adapter.fallback, stt.FallbackAdapter)
    assert provider_labels(adapter) == [dead, "faster-whisper"]
    try:
        event = await asyncio.wait_for(adapter.recognize(piper_sentence), HANG_GUARD)
    finally:
        await adapter.aclose()

    assert wer(SENTENCE, event.alternatives[0].text) <= 0.15
    assert provider_label(adapter) == "faster-whisper"


async def test_stt_server_error_fails_over_in_order(
    openai_server: OpenAICompatibleServer, piper_sentence: rtc.AudioFrame
) -> None:
    async with OpenAICompatibleServer(stt=openai_server.stt, fail_with=500) as broken:
        adapter = build_stt(clean_settings(stt=[broken.base_url, openai_server.base_url, "faster-whisper"]))
        availability: list[tuple[str, bool]] = []
        adapter.on("stt_availability_changed", lambda ev: availability.append((provider_label(ev.stt), ev.available)))
        try:
            event = await asyncio.wait_for(adapter.recognize(piper_sentence), HANG_GUARD)
        finally:
            await adapter.aclose()

        assert wer(SENTENCE, event.alternatives[0].text) <= 0.15
        assert provider_label(adapter) == openai_server.base_url  # the second entry, not the embedded third
        assert broken.requests[0] == ("POST", "/v1/audio/transcriptions")  # the first entry was asked first
        assert availability[0] == (broken.base_url, False)


async def test_stt_first_provider_answers_when_healthy(
    openai_server: OpenAICompatibleServer, piper_sentence: rtc.AudioFrame
) -> None:
    adapter = build_stt(clean_settings(stt=[openai_server.base_url, "faster-whisper"]))
    try:
        await adapter.recognize(piper_sentence)
    finally:
        await adapter.aclose()
    assert provider_label(adapter) == openai_server.base_url


async def test_stt_all_failing_raises() -> None:
    adapter = build_stt(clean_settings(stt=[closed_port_url(), closed_port_url()], provider_timeout=2))
    silence = rtc.AudioFrame(b"\0\0" * 16000, 16000, 1, 16000)
    try:
        with pytest.raises(APIConnectionError):
            await asyncio.wait_for(adapter.recognize(silence), HANG_GUARD)
    finally:
        await adapter.aclose()


async def test_tts_dead_url_fails_over_to_piper() -> None:
    dead = closed_port_url()
    adapter = build_tts(clean_settings(tts=[dead, "piper", "espeak"], provider_timeout=2))
    assert isinstance(adapter, tts.FallbackAdapter)
    try:
        frame = await asyncio.wait_for(adapter.synthesize("Good morning.").collect(), HANG_GUARD)
    finally:
        await adapter.aclose()

    assert frame.duration > 0.3
    assert frame.sample_rate == adapter.sample_rate == 24000  # highest rate among providers (the URL's)
    assert provider_label(adapter) == "piper"


async def test_tts_order_respected_and_server_error_skipped(openai_server: OpenAICompatibleServer) -> None:
    async with OpenAICompatibleServer(tts=openai_server.tts, fail_with=500) as broken:
        adapter = build_tts(clean_settings(tts=[broken.base_url, "espeak", "piper"]))
        try:
            await asyncio.wait_for(adapter.synthesize("Good morning.").collect(), HANG_GUARD)
        finally:
            await adapter.aclose()
        assert ("POST", "/v1/audio/speech") in broken.requests
        assert provider_label(adapter) == "espeak"

    adapter = build_tts(clean_settings(tts=["piper", "espeak"]))
    try:
        await adapter.synthesize("Good morning.").collect()
    finally:
        await adapter.aclose()
    assert provider_label(adapter) == "piper"


async def test_tts_all_failing_raises() -> None:
    adapter = build_tts(clean_settings(tts=[closed_port_url(), closed_port_url()], provider_timeout=2))
    try:
        with pytest.raises(APIConnectionError):
            await asyncio.wait_for(adapter.synthesize("Hello.").collect(), HANG_GUARD)
    finally:
        await adapter.aclose()


async def test_stt_adapter_streams_through_the_vad_like_an_agent_session(piper_sentence: rtc.AudioFrame) -> None:
    """The worker path: FallbackAdapter.stream() over non-streaming providers, segmented by our Silero VAD."""
    adapter = build_stt(clean_settings(stt=[closed_port_url(), "faster-whisper"], silence_ms=400, provider_timeout=2))
    stream = adapter.stream()
    sr = piper_sentence.sample_rate
    speech = np.frombuffer(piper_sentence.data, dtype=np.int16)
    audio = np.concatenate([np.zeros(sr // 2, np.int16), speech, np.zeros(sr * 2, np.int16)])
    step = sr // 50
    for i in range(0, audio.size, step):
        chunk = audio[i : i + step]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), sr, 1, chunk.size))
    stream.end_input()

    async def finals() -> list[str]:
        return [ev.alternatives[0].text async for ev in stream if ev.type == stt.SpeechEventType.FINAL_TRANSCRIPT]

    try:
        texts = await asyncio.wait_for(finals(), HANG_GUARD)
    finally:
        await stream.aclose()
        await adapter.aclose()

    assert len(texts) == 1 and wer(SENTENCE, texts[0]) <= 0.15, texts
    assert provider_label(adapter) == "faster-whisper"


async def test_stt_server_that_never_answers_fails_over(piper_sentence: rtc.AudioFrame) -> None:
    """Accepts the connection, never answers: the request is given up after provider_timeout, not the plugin's
    own 30 s read timeout, and the next provider answers."""
    async with SilentServer() as silent:
        adapter = build_stt(clean_settings(stt=[silent.base_url, "faster-whisper"], provider_timeout=1))
        try:
            event = await asyncio.wait_for(adapter.recognize(piper_sentence), HANG_GUARD)
        finally:
            await adapter.aclose()
        assert silent.connections >= 1  # the silent server was really asked first

    assert wer(SENTENCE, event.alternatives[0].text) <= 0.15
    assert provider_label(adapter) == "faster-whisper"


async def test_tts_server_that_never_answers_fails_over() -> None:
    async with SilentServer() as silent:
        adapter = build_tts(clean_settings(tts=[silent.base_url, "piper"], provider_timeout=1))
        try:
            frame = await asyncio.wait_for(adapter.synthesize("Good morning.").collect(), HANG_GUARD)
        finally:
            await adapter.aclose()
        assert silent.connections >= 1

    assert frame.duration > 0.3
    assert provider_label(adapter) == "piper"


async def test_single_silent_server_times_out() -> None:
    async with SilentServer() as silent:
        provider = build_one_stt(silent.base_url, clean_settings(stt=[silent.base_url], provider_timeout=1))
        silence = rtc.AudioFrame(b"\0\0" * 16000, 16000, 1, 16000)
        try:
            with pytest.raises(APITimeoutError):
                no_retry = APIConnectOptions(max_retry=0)  # livekit's default retries a single provider
                await asyncio.wait_for(provider.recognize(silence, conn_options=no_retry), HANG_GUARD)
        finally:
            await provider.aclose()


async def test_tts_label_ignores_background_probes_and_follows_recovery(openai_server: OpenAICompatibleServer) -> None:
    """A provider that failed once is probed by livekit in the background; the probe's success must not be
    taken for the request's answer, but once recovered the provider serves, and is named, again."""
    openai_server.fail_next = 1
    adapter = build_tts(clean_settings(tts=[openai_server.base_url, "piper"]))
    recovered = asyncio.Event()
    adapter.on("tts_availability_changed", lambda ev: ev.available and recovered.set())
    try:
        await asyncio.wait_for(adapter.synthesize("Good morning.").collect(), HANG_GUARD)
        assert provider_label(adapter) == "piper"
        await asyncio.wait_for(recovered.wait(), HANG_GUARD)  # the probe of the server succeeded
        assert openai_server.requests.count(("POST", "/v1/audio/speech")) == 2
        assert provider_label(adapter) == "piper"  # the probe answered nobody

        await asyncio.wait_for(adapter.synthesize("Good evening.").collect(), HANG_GUARD)
        assert provider_label(adapter) == openai_server.base_url
    finally:
        await adapter.aclose()


async def test_stt_label_ignores_background_probes_and_follows_recovery(
    openai_server: OpenAICompatibleServer, piper_sentence: rtc.AudioFrame
) -> None:
    openai_server.fail_next = 1
    adapter = build_stt(clean_settings(stt=[openai_server.base_url, "faster-whisper"]))
    recovered = asyncio.Event()
    adapter.on("stt_availability_changed", lambda ev: ev.available and recovered.set())
    try:
        await asyncio.wait_for(adapter.recognize(piper_sentence), HANG_GUARD)
        assert provider_label(adapter) == "faster-whisper"
        await asyncio.wait_for(recovered.wait(), HANG_GUARD)
        assert provider_label(adapter) == "faster-whisper"

        event = await asyncio.wait_for(adapter.recognize(piper_sentence), HANG_GUARD)
        assert wer(SENTENCE, event.alternatives[0].text) <= 0.15
        assert provider_label(adapter) == openai_server.base_url
    finally:
        await adapter.aclose()


async def test_label_survives_a_request_that_failed_everywhere(openai_server: OpenAICompatibleServer) -> None:
    adapter = build_tts(clean_settings(tts=[closed_port_url(), openai_server.base_url], provider_timeout=2))
    try:
        await asyncio.wait_for(adapter.synthesize("Hello.").collect(), HANG_GUARD)
        assert provider_label(adapter) == openai_server.base_url
        openai_server.fail_with = 500
        with pytest.raises(APIConnectionError):
            await asyncio.wait_for(adapter.synthesize("Hello again.").collect(), HANG_GUARD)
        assert provider_label(adapter) == openai_server.base_url  # still the last one that succeeded
    finally:
        await adapter.aclose()
