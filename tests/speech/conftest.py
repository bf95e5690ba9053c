"""Fixtures for the speech tests: models are loaded once per session (the process-wide caches do the rest)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from livekit import rtc

from agent.speech import EspeakTTS, FasterWhisperSTT, PiperTTS

from .openai_compatible_server import OpenAICompatibleServer

SENTENCE = "The weather is lovely today, so we will walk to the park after lunch."




async def synthesize(tts: PiperTTS | EspeakTTS, text: str) -> rtc.AudioFrame:
    return await tts.synthesize(text).collect()




@pytest.fixture(scope="session")
def piper_sentence(piper: PiperTTS) -> rtc.AudioFrame:
    """SENTENCE spoken by the bundled Piper voice (synthesised once per session)."""
    return asyncio.run(synthesize(piper, SENTENCE))


@pytest.fixture
async def openai_server(whisper: FasterWhisperSTT, piper: PiperTTS) -> AsyncIterator[OpenAICompatibleServer]:
    """A real OpenAI-compatible server on 127.0.0.1 (our embedded models behind the OpenAI API)."""
    async with OpenAICompatibleServer(stt=whisper, tts=piper) as server:
        yield server
