"""Fixtures for the speech tests: models are loaded once per session (the process-wide caches do the rest)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from livekit import rtc

from agent.config import Settings, load_settings
from agent.speech import EspeakTTS, FasterWhisperSTT, PiperTTS

from .openai_compatible_server import OpenAICompatibleServer

SENTENCE = "The weather is lovely today, so we will walk to the park after lunch."


def make_settings(**overrides: object) -> Settings:
    """Settings from defaults plus overrides only (no .env, no VOICE_MCP_* from the caller's shell)."""
    import os

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("VOICE_MCP_") or k == "OPENAI_API_KEY"}
    try:
        return load_settings(env_file=None, **overrides)
    finally:
        os.environ.update(saved)


async def synthesize(tts: PiperTTS | EspeakTTS, text: str) -> rtc.AudioFrame:
    return await tts.synthesize(text).collect()


@pytest.fixture(scope="session")
def whisper() -> FasterWhisperSTT:
    stt = FasterWhisperSTT()
    asyncio.run(stt.load())  # load once, before any test measures anything
    return stt


@pytest.fixture(scope="session")
def piper() -> PiperTTS:
    tts = PiperTTS()
    asyncio.run(tts.load())
    return tts


@pytest.fixture(scope="session")
def piper_sentence(piper: PiperTTS) -> rtc.AudioFrame:
    """SENTENCE spoken by the bundled Piper voice (synthesised once per session)."""
    return asyncio.run(synthesize(piper, SENTENCE))


@pytest.fixture
async def openai_server(whisper: FasterWhisperSTT, piper: PiperTTS) -> AsyncIterator[OpenAICompatibleServer]:
    """A real OpenAI-compatible server on 127.0.0.1 (our embedded models behind the OpenAI API)."""
    async with OpenAICompatibleServer(stt=whisper, tts=piper) as server:
        yield server
