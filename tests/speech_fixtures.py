"""Session fixtures with the embedded speech models, loaded once for every test directory that needs them.

Registered in tests/conftest.py. Loading goes through the components' public `load()`.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from agent.config import Settings, load_settings
from agent.speech import FasterWhisperSTT, PiperTTS


def clean_settings(**overrides: object) -> Settings:
    """Settings from defaults plus `overrides` only: no .env, nothing from the caller's VOICE_MCP_*/LIVEKIT_*/
    OPENAI_API_KEY."""
    saved = {
        k: os.environ.pop(k)
        for k in list(os.environ)
        if k.startswith(("VOICE_MCP_", "LIVEKIT_")) or k == "OPENAI_API_KEY"
    }
    try:
        return load_settings(env_file=None, **overrides)
    finally:
        os.environ.update(saved)


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
