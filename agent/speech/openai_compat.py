"""OpenAI and OpenAI-compatible servers (Whisper.cpp, Speaches, Kokoro-FastAPI, ...) via livekit.plugins.openai.

Provider entry `openai` uses `openai_base_url` (default: OpenAI itself) and needs `openai_api_key`. An entry
that is a URL is a local or self-hosted OpenAI-compatible server; such servers usually ignore the key, so a
placeholder is sent when none is configured.

Each provider gets its own `openai.AsyncClient` (built here, passed to the plugin as `client=`, closed by the
provider's `aclose()`), with `max_retries=0` (failover, not retries) and every timeout phase capped at
`settings.provider_timeout`: the plugin asks for a 30 s read timeout per request, which would let a server that
accepts the connection and never answers hold the conversation for 30 s before the next provider is asked.
"""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import openai as openai_sdk
from livekit.plugins import openai

from agent.config import Settings

from .errors import ProviderUnavailable

OPENAI_KIND = "openai"
PLACEHOLDER_API_KEY = "voice-mcp-no-key"
OPENAI_KEY_FIX = "set OPENAI_API_KEY (or VOICE_MCP_OPENAI_API_KEY), or remove `openai` from the provider list"
TIMEOUT_PHASES = ("connect", "read", "write", "pool")


def is_url(entry: str) -> bool:
    return entry.startswith(("http://", "https://"))


def endpoint(entry: str, settings: Settings) -> tuple[str | None, str]:
    """(base URL or None for OpenAI's default, API key) for an `openai` or URL provider entry."""
    if is_url(entry):
        return entry, settings.openai_api_key or PLACEHOLDER_API_KEY
    if not settings.openai_api_key:
        raise ProviderUnavailable(OPENAI_KIND, "no API key configured", OPENAI_KEY_FIX)
    return settings.openai_base_url, settings.openai_api_key


class CappedTimeoutTransport(httpx.AsyncBaseTransport):
    """httpx transport that caps each timeout phase (connect, read, write, pool) of every request at `limit` s.

    Per-request timeouts (httpx's documented `timeout` request extension; openai uses Pydantic's continuation
    `httpx2`) win over a client's default, and the plugin sets one on every request; capping them here is what
    bounds a server that never answers.
    """

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        asked = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            phase: self.limit if asked.get(phase) is None else min(asked[phase], self.limit) for phase in TIMEOUT_PHASES
        }
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def make_client(entry: str, settings: Settings) -> openai_sdk.AsyncClient:
    """Our own client for one provider entry: no retries, every timeout phase at most `provider_timeout`."""
    base_url, api_key = endpoint(entry, settings)
    limit = settings.provider_timeout
    return openai_sdk.AsyncClient(
        api_key=api_key,
        base_url=base_url,
        max_retries=0,
        timeout=httpx.Timeout(limit),
        http_client=httpx.AsyncClient(
            transport=CappedTimeoutTransport(limit), timeout=httpx.Timeout(limit), follow_redirects=True
        ),
    )


class _OwnsClient:
    """Mixin for the OpenAI plugin's STT/TTS: built on a client we made, so `aclose()` also closes that client."""

    def __init__(self, *, client: openai_sdk.AsyncClient, **options: object) -> None:
        super().__init__(client=client, **options)  # type: ignore[call-arg]
        self.owned_client = client

    async def aclose(self) -> None:
        await super().aclose()  # type: ignore[misc]
        await self.owned_client.close()


class OpenAISTT(_OwnsClient, openai.STT):
    """`livekit.plugins.openai.STT` on a client we built; `aclose()` also closes that client. `language` is the
    language asked for (per call through `update_options(language=...)`)."""

    def __init__(self, *, language: str = "en", **options: Any) -> None:
        super().__init__(language=language, **options)
        self._asked_language = language

    @property
    def language(self) -> str:
        return self._asked_language

    def update_options(self, **options: Any) -> None:
        super().update_options(**options)
        if isinstance(options.get("language"), str):
            self._asked_language = options["language"]


class OpenAITTS(_OwnsClient, openai.TTS):
    """`livekit.plugins.openai.TTS` on a client we built; `aclose()` also closes that client. `voice` and `speed`
    read the plugin's options (the server decides which voices exist)."""

    @property
    def voice(self) -> str:
        return str(self._opts.voice)

    @property
    def speed(self) -> float:
        return float(self._opts.speed)


def openai_stt(entry: str, settings: Settings) -> OpenAISTT:
    # use_realtime=False: plain /audio/transcriptions, which every compatible server implements
    return OpenAISTT(
        client=make_client(entry, settings),
        model=settings.openai_stt_model,
        language=settings.stt_language,
        use_realtime=False,
    )


def openai_tts(entry: str, settings: Settings) -> OpenAITTS:
    options: dict[str, object] = {}
    if is_url(entry):
        options["response_format"] = "wav"  # local servers: no encoder needed, lossless, universally supported
    return OpenAITTS(
        client=make_client(entry, settings),
        model=settings.openai_tts_model,
        voice=settings.openai_tts_voice,
        speed=settings.tts_speed,
        **options,
    )
