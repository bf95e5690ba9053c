"""Build the configured speech providers, in failover order, as livekit-agents components.

`build_stt(settings)` / `build_tts(settings)` return one provider when one is configured, otherwise livekit's own
`stt.FallbackAdapter` / `tts.FallbackAdapter` around them (first entry first; for STT inside a VAD
`StreamAdapter`, see `FallbackSTT`). The same objects serve the
livekit-agents worker (`AgentSession(stt=..., tts=..., vad=...)`) and the local loop (`await stt.recognize(...)`,
`tts.synthesize(text)`).

Which provider answered: `provider_label(obj)` after a request returns the provider-list entry that served
it (`"faster-whisper"`, `"piper"`, `"espeak"`, `"openai"` or the server URL). For a per-request record, listen
to `metrics_collected` on the returned object: the adapters forward every provider's `STTMetrics`/`TTSMetrics`,
whose `metadata.model_provider` and `label` name the provider that did the work; availability changes arrive as
`stt_availability_changed` / `tts_availability_changed` events.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import TypeVar

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, stt, tts, vad
from livekit.agents.tts.fallback_adapter import DEFAULT_FALLBACK_API_CONNECT_OPTIONS
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer

from agent.config import Settings

from .errors import ProviderUnavailable
from .espeak_tts import EspeakTTS
from .openai_compat import is_url, openai_stt, openai_tts
from .piper_tts import PiperTTS
from .vad import build_vad
from .whisper_stt import FasterWhisperSTT

logger = logging.getLogger("voice_mcp.speech")

_entry_names: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


def _named(entry: str, provider: stt.STT | tts.TTS) -> None:
    _entry_names[provider] = entry


def build_one_stt(entry: str, settings: Settings) -> stt.STT:
    """The STT for one provider-list entry (`ProviderUnavailable` if it cannot be built)."""
    if entry == "faster-whisper":
        provider: stt.STT = FasterWhisperSTT(
            model=settings.stt_model, compute_type=settings.stt_compute_type, language=settings.stt_language
        )
    elif entry == "openai" or is_url(entry):
        provider = openai_stt(entry, settings)
    else:
        raise ProviderUnavailable(entry, "unknown STT provider", "use faster-whisper, openai or a server URL")
    _named(entry, provider)
    return provider


def build_one_tts(entry: str, settings: Settings) -> tts.TTS:
    """The TTS for one provider-list entry (`ProviderUnavailable` if it cannot be built)."""
    if entry == "piper":
        provider: tts.TTS = PiperTTS(voice=settings.tts_voice, speed=settings.tts_speed)
    elif entry == "espeak":
        provider = EspeakTTS(voice=settings.espeak_voice, speed=settings.tts_speed)
    elif entry == "openai" or is_url(entry):
        provider = openai_tts(entry, settings)
    else:
        raise ProviderUnavailable(entry, "unknown TTS provider", "use piper, espeak, openai or a server URL")
    _named(entry, provider)
    return provider


P = TypeVar("P", stt.STT, tts.TTS)


def _build_all(role: str, entries: list[str], build: Callable[[str], P]) -> list[P]:
    built: list[P] = []
    problems: list[ProviderUnavailable] = []
    for entry in entries:
        try:
            built.append(build(entry))
        except ProviderUnavailable as exc:
            logger.warning("%s provider %s skipped: %s", role, entry, exc)
            problems.append(exc)
    if not built:
        raise ProviderUnavailable(
            role,
            "no configured provider can be used (" + "; ".join(f"{p.provider}: {p.problem}" for p in problems) + ")",
            " / ".join(p.fix for p in problems) or f"configure VOICE_MCP_{role.upper()}",
        )
    return built


class FallbackSTT(stt.StreamAdapter):
    """Failover per utterance: the VAD cuts the audio into utterances, each one goes to livekit's
    `stt.FallbackAdapter.recognize`, which asks the providers in order.

    livekit's `FallbackAdapter.stream()` over non-streaming providers would instead switch providers mid-stream
    and drop the utterance that hit the failure; here no speech is lost. `fallback` is the inner
    `stt.FallbackAdapter`; its `stt_availability_changed` events (providers going down and recovering) are
    re-emitted by this object.
    Only the default `conn_options` differ from livekit's (no retries of the whole chain, `provider_timeout`).
    """

    def __init__(self, providers: list[stt.STT], *, vad: vad.VAD, timeout: float) -> None:
        self._providers = list(providers)
        self.fallback = stt.FallbackAdapter(
            providers, vad=vad, attempt_timeout=timeout, max_retry_per_stt=0, retry_interval=0.5
        )
        super().__init__(stt=self.fallback, vad=vad)
        self.fallback.on("stt_availability_changed", self._forward_availability)
        self._default_conn_options = APIConnectOptions(max_retry=0, timeout=timeout, retry_interval=0.5)

    def _forward_availability(self, event: stt.AvailabilityChangedEvent) -> None:
        self.emit("stt_availability_changed", event)  # type: ignore[arg-type]

    def _conn_options(self, conn_options: APIConnectOptions) -> APIConnectOptions:
        return self._default_conn_options if conn_options is DEFAULT_API_CONNECT_OPTIONS else conn_options

    async def recognize(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        return await super().recognize(buffer, language=language, conn_options=self._conn_options(conn_options))

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return super().stream(language=language, conn_options=self._conn_options(conn_options))

    async def aclose(self) -> None:
        """Close the adapters and the providers they were built with (livekit's adapters leave those open)."""
        self.fallback.off("stt_availability_changed", self._forward_availability)
        await super().aclose()
        await self.fallback.aclose()
        for provider in self._providers:
            await provider.aclose()


def build_stt(settings: Settings, *, vad: vad.VAD | None = None) -> stt.STT:
    """STT providers from `settings.stt`, in order; more than one are wrapped for failover (`FallbackSTT`).

    Providers that cannot be built (missing package/key) are skipped with a warning; `ProviderUnavailable` if
    none is left. Our providers are non-streaming, so failover needs a VAD to cut utterances for `stream()`:
    pass the session's `vad`, or one is built from the settings. Each provider gets one attempt (connect
    timeout `provider_timeout` for servers) before the next one is asked.
    """
    providers: list[stt.STT] = _build_all("stt", settings.stt, lambda e: build_one_stt(e, settings))
    if len(providers) == 1:
        return providers[0]
    return FallbackSTT(providers, vad=vad or build_vad(settings), timeout=settings.provider_timeout)


class FallbackTTS(tts.FallbackAdapter):
    """livekit's `tts.FallbackAdapter` whose default per-request options come from the settings.

    Only the defaults differ: explicit `conn_options` (e.g. from an `AgentSession`) are used as given.
    """

    def __init__(self, providers: list[tts.TTS], *, timeout: float, max_retry_per_tts: int = 0) -> None:
        super().__init__(providers, max_retry_per_tts=max_retry_per_tts)
        self._providers = list(providers)
        self._default_conn_options = APIConnectOptions(max_retry=0, timeout=timeout, retry_interval=0.5)

    async def aclose(self) -> None:
        """Close the adapter and the providers it was built with (livekit's adapter leaves those open)."""
        await super().aclose()
        for provider in self._providers:
            await provider.aclose()

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_FALLBACK_API_CONNECT_OPTIONS
    ) -> tts.FallbackChunkedStream:
        if conn_options is DEFAULT_FALLBACK_API_CONNECT_OPTIONS:
            conn_options = self._default_conn_options
        return super().synthesize(text, conn_options=conn_options)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_FALLBACK_API_CONNECT_OPTIONS
    ) -> tts.FallbackSynthesizeStream:
        if conn_options is DEFAULT_FALLBACK_API_CONNECT_OPTIONS:
            conn_options = self._default_conn_options
        return super().stream(conn_options=conn_options)


def build_tts(settings: Settings) -> tts.TTS:
    """TTS providers from `settings.tts`, in order; more than one are wrapped in `tts.FallbackAdapter`.

    Providers that cannot be built are skipped with a warning; `ProviderUnavailable` if none is left. A failed
    provider is not retried: the next one is asked at once. Audio from providers with another sample rate is
    resampled to the highest rate among them (see `.sample_rate`).
    """
    providers: list[tts.TTS] = _build_all("tts", settings.tts, lambda e: build_one_tts(e, settings))
    if len(providers) == 1:
        return providers[0]
    return FallbackTTS(providers, timeout=settings.provider_timeout)


def _unwrap(obj: stt.STT | tts.TTS) -> stt.STT | tts.TTS:
    while True:
        if isinstance(obj, stt.FallbackAdapter | tts.FallbackAdapter):
            obj = obj._active_instance  # "the instance that most recently served a request" (livekit 1.8.9)
        elif isinstance(obj, stt.StreamAdapter):
            obj = obj.wrapped_stt
        elif isinstance(obj, tts.StreamAdapter):
            obj = obj._wrapped_tts
        else:
            return obj


def provider_label(obj: stt.STT | tts.TTS) -> str:
    """The provider-list entry that served the latest request of `obj` (a provider or a fallback adapter).

    For a single provider that is its own entry (e.g. `"piper"`, `"http://127.0.0.1:2022/v1"`); for a
    `FallbackAdapter` it is the provider that most recently produced a result (the first one before any
    request). After a request that failed everywhere it still names the last provider that succeeded.
    """
    served = _unwrap(obj)
    return _entry_names.get(served) or served.provider


def provider_labels(obj: stt.STT | tts.TTS) -> list[str]:
    """All providers behind `obj`, in failover order."""
    if isinstance(obj, FallbackSTT):
        obj = obj.fallback
    if isinstance(obj, stt.FallbackAdapter):
        inner: list[stt.STT | tts.TTS] = list(obj._stt_instances)
    elif isinstance(obj, tts.FallbackAdapter):
        inner = list(obj._tts_instances)
    else:
        inner = [obj]
    out = []
    for item in inner:
        if isinstance(item, stt.StreamAdapter):
            item = item.wrapped_stt
        out.append(_entry_names.get(item) or item.provider)
    return out
