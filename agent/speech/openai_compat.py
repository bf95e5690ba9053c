"""OpenAI and OpenAI-compatible servers (Whisper.cpp, Speaches, Kokoro-FastAPI, ...) via livekit.plugins.openai.

Provider entry `openai` uses `openai_base_url` (default: OpenAI itself) and needs `openai_api_key`. An entry
that is a URL is a local or self-hosted OpenAI-compatible server; such servers usually ignore the key, so a
placeholder is sent when none is configured.
"""

from __future__ import annotations

from livekit.plugins import openai

from agent.config import Settings

from .errors import ProviderUnavailable

OPENAI_KIND = "openai"
PLACEHOLDER_API_KEY = "voice-mcp-no-key"
OPENAI_KEY_FIX = "set OPENAI_API_KEY (or VOICE_MCP_OPENAI_API_KEY), or remove `openai` from the provider list"


def is_url(entry: str) -> bool:
    return entry.startswith(("http://", "https://"))


def endpoint(entry: str, settings: Settings) -> tuple[str | None, str]:
    """(base URL or None for OpenAI's default, API key) for an `openai` or URL provider entry."""
    if is_url(entry):
        return entry, settings.openai_api_key or PLACEHOLDER_API_KEY
    if not settings.openai_api_key:
        raise ProviderUnavailable(OPENAI_KIND, "no API key configured", OPENAI_KEY_FIX)
    return settings.openai_base_url, settings.openai_api_key


class OpenAISTT(openai.STT):
    """`livekit.plugins.openai.STT` that also closes its HTTP client on `aclose()` (the plugin leaves it open)."""

    async def aclose(self) -> None:
        await super().aclose()
        await self._client.close()


def openai_stt(entry: str, settings: Settings) -> openai.STT:
    base_url, api_key = endpoint(entry, settings)
    kwargs: dict[str, str] = {"api_key": api_key}
    if base_url:
        kwargs["base_url"] = base_url
    # use_realtime=False: plain /audio/transcriptions, which every compatible server implements
    return openai.STT(model=settings.openai_stt_model, language=settings.stt_language, use_realtime=False, **kwargs)


def openai_tts(entry: str, settings: Settings) -> openai.TTS:
    base_url, api_key = endpoint(entry, settings)
    kwargs: dict[str, str] = {"api_key": api_key}
    if base_url:
        kwargs["base_url"] = base_url
    if is_url(entry):
        kwargs["response_format"] = "wav"  # local servers: no encoder needed, lossless, universally supported
    return openai.TTS(
        model=settings.openai_tts_model, voice=settings.openai_tts_voice, speed=settings.tts_speed, **kwargs
    )
