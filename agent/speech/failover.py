"""Failover across the configured providers, and the record of which provider served a request.

livekit's `stt.FallbackAdapter` / `tts.FallbackAdapter` do the failover (for STT inside a VAD `StreamAdapter`, see
`FallbackSTT`); `build_stt`/`build_tts` (`agent.speech.builders`) wrap the providers in them when more than one is
configured.

Which provider answered: `provider_label(obj)` after a request returns the provider-list entry that served
it (`"faster-whisper"`, `"piper"`, `"espeak"`, `"openai"` or the server URL). We build every provider ourselves,
so we keep our own record (`ProviderChain`): the entries in order, and which one served, learnt from the public
`metrics_collected` event each provider emits when it has produced a result. The adapters also forward those
`STTMetrics`/`TTSMetrics` (their `metadata.model_provider` names the provider); availability changes arrive as
`stt_availability_changed` / `tts_availability_changed` events.
"""

from __future__ import annotations

import contextvars
import functools
import weakref
from collections.abc import Callable
from typing import Any

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectOptions, stt, tts, vad
from livekit.agents.stt.fallback_adapter import DEFAULT_FALLBACK_API_CONNECT_OPTIONS as STT_FALLBACK_CONNECT_OPTIONS
from livekit.agents.tts.fallback_adapter import DEFAULT_FALLBACK_API_CONNECT_OPTIONS
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer

# provider -> its provider-list entry, recorded when we build it
_entry_names: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


def record_entry(entry: str, provider: stt.STT | tts.TTS) -> None:
    """Remember which provider-list entry `provider` was built from (the builders call this)."""
    _entry_names[provider] = entry


def entry_of(provider: stt.STT | tts.TTS) -> str:
    """The provider-list entry `provider` was built from (its livekit `provider` name if we did not build it)."""
    return _entry_names.get(provider) or provider.provider


class _Request:
    """One request through a `ProviderChain`; travels in a context variable into every task the request starts."""

    __slots__ = ("chain", "failed", "label_before", "served")

    def __init__(self, chain: ProviderChain) -> None:
        self.chain = chain
        self.served = -1  # furthest entry that produced a result under this request
        self.label_before = 0
        self.failed = False


_current_request: contextvars.ContextVar[_Request | None] = contextvars.ContextVar(
    "voice_mcp_speech_request", default=None
)


class ProviderChain:
    """Our record of the providers behind a failover adapter: entries in failover order, and who served last.

    Each request runs with a `_Request` in a context variable, which livekit's adapter carries into the tasks
    it starts (its own stream tasks and the background probes of failed providers). Each provider emits the
    public `metrics_collected` event once it has produced a result. Within one request the adapter asks the
    providers in list order, stops at the first that answers and probes only providers before that one, so the
    request was served by the furthest entry that produced a result under it. A request that failed everywhere
    leaves the previous label (a probe that succeeded meanwhile does not count).
    """

    def __init__(self, providers: list[stt.STT] | list[tts.TTS]) -> None:
        self.providers: list[stt.STT | tts.TTS] = list(providers)
        self.labels = [entry_of(p) for p in self.providers]
        self.served = 0  # index into providers; the first entry before any request
        self._last_request: _Request | None = None
        self._listeners: list[tuple[stt.STT | tts.TTS, Callable[..., None]]] = []
        for index, provider in enumerate(self.providers):
            listener = functools.partial(self._on_result, index)
            provider.on("metrics_collected", listener)
            self._listeners.append((provider, listener))

    @property
    def label(self) -> str:
        return self.labels[self.served]

    def begin(self) -> contextvars.Token[_Request | None]:
        """Start a request in the current context (pass the token to `end`)."""
        return _current_request.set(_Request(self))

    def end(self, token: contextvars.Token[_Request | None]) -> None:
        _current_request.reset(token)

    def _on_result(self, index: int, *_: Any) -> None:
        request = _current_request.get()
        if request is None or request.chain is not self or request.failed or index <= request.served:
            return
        if self._last_request is not request:
            request.label_before = self.served
            self._last_request = request
        request.served = index
        self.served = index

    def fail_current(self) -> None:
        """The request of the current context failed everywhere: forget what its probes recorded."""
        request = _current_request.get()
        if request is None or request.chain is not self:
            return
        request.failed = True
        if self._last_request is request:
            self.served = request.label_before
            self._last_request = None

    def close(self) -> None:
        for provider, listener in self._listeners:
            provider.off("metrics_collected", listener)
        self._listeners.clear()


class ChainFallbackAdapter(stt.FallbackAdapter):
    """livekit's `stt.FallbackAdapter` whose requests are recorded on our `ProviderChain` (see there)."""

    def __init__(self, chain: ProviderChain, providers: list[stt.STT], **options: Any) -> None:
        super().__init__(providers, **options)
        self.provider_chain = chain

    async def recognize(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = STT_FALLBACK_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        token = self.provider_chain.begin()
        try:
            return await super().recognize(buffer, language=language, conn_options=conn_options)
        except BaseException:
            self.provider_chain.fail_current()
            raise
        finally:
            self.provider_chain.end(token)


class FallbackSTT(stt.StreamAdapter):
    """Failover per utterance: the VAD cuts the audio into utterances, each one goes to livekit's
    `stt.FallbackAdapter.recognize`, which asks the providers in order.

    livekit's `FallbackAdapter.stream()` over non-streaming providers would instead switch providers mid-stream
    and drop the utterance that hit the failure; here no speech is lost. `fallback` is the inner
    `stt.FallbackAdapter`; its `stt_availability_changed` events (providers going down and recovering) are
    re-emitted by this object. `chain` records the entries and which one served (`provider_label`).
    Only the default `conn_options` differ from livekit's (no retries of the whole chain, `provider_timeout`).
    """

    def __init__(self, providers: list[stt.STT], *, vad: vad.VAD, timeout: float) -> None:
        self.chain = ProviderChain(providers)
        self.fallback = ChainFallbackAdapter(
            self.chain, providers, vad=vad, attempt_timeout=timeout, max_retry_per_stt=0, retry_interval=0.5
        )
        super().__init__(stt=self.fallback, vad=vad)
        self.fallback.on("stt_availability_changed", self._forward_availability)
        self._default_conn_options = APIConnectOptions(max_retry=0, timeout=timeout, retry_interval=0.5)

    def _forward_availability(self, event: stt.AvailabilityChangedEvent) -> None:
        self.emit("stt_availability_changed", event)  # type: ignore[arg-type]

    def _with_defaults(self, conn_options: APIConnectOptions) -> APIConnectOptions:
        return self._default_conn_options if conn_options is DEFAULT_API_CONNECT_OPTIONS else conn_options

    async def recognize(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.SpeechEvent:
        return await super().recognize(buffer, language=language, conn_options=self._with_defaults(conn_options))

    def stream(
        self,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS,
    ) -> stt.RecognizeStream:
        return super().stream(language=language, conn_options=self._with_defaults(conn_options))

    async def aclose(self) -> None:
        """Close the adapters and the providers they were built with (livekit's adapters leave those open)."""
        self.fallback.off("stt_availability_changed", self._forward_availability)
        await super().aclose()
        await self.fallback.aclose()
        self.chain.close()
        for provider in self.chain.providers:
            await provider.aclose()


class FallbackTTS(tts.FallbackAdapter):
    """livekit's `tts.FallbackAdapter` whose default per-request options come from the settings, and whose
    requests are recorded on our `ProviderChain` (`chain`, for `provider_label`).

    Only the defaults differ: explicit `conn_options` (e.g. from an `AgentSession`) are used as given.
    """

    def __init__(self, providers: list[tts.TTS], *, timeout: float, max_retry_per_tts: int = 0) -> None:
        super().__init__(providers, max_retry_per_tts=max_retry_per_tts)
        self.chain = ProviderChain(providers)
        self._default_conn_options = APIConnectOptions(max_retry=0, timeout=timeout, retry_interval=0.5)
        self.on("error", self._on_error)

    def _on_error(self, error: tts.TTSError) -> None:
        # emitted from the failed request's own task, so its context names the request
        if not error.recoverable:
            self.chain.fail_current()

    async def aclose(self) -> None:
        """Close the adapter and the providers it was built with (livekit's adapter leaves those open)."""
        await super().aclose()
        self.off("error", self._on_error)
        self.chain.close()
        for provider in self.chain.providers:
            await provider.aclose()

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_FALLBACK_API_CONNECT_OPTIONS
    ) -> tts.FallbackChunkedStream:
        if conn_options is DEFAULT_FALLBACK_API_CONNECT_OPTIONS:
            conn_options = self._default_conn_options
        token = self.chain.begin()  # the stream's tasks, created now, inherit the request
        try:
            return super().synthesize(text, conn_options=conn_options)
        finally:
            self.chain.end(token)

    def stream(
        self, *, conn_options: APIConnectOptions = DEFAULT_FALLBACK_API_CONNECT_OPTIONS
    ) -> tts.FallbackSynthesizeStream:
        if conn_options is DEFAULT_FALLBACK_API_CONNECT_OPTIONS:
            conn_options = self._default_conn_options
        token = self.chain.begin()
        try:
            return super().stream(conn_options=conn_options)
        finally:
            self.chain.end(token)


def chain_of(obj: object) -> ProviderChain | None:
    if isinstance(obj, FallbackSTT | FallbackTTS):
        return obj.chain
    if isinstance(obj, ChainFallbackAdapter):
        return obj.provider_chain
    return None


def provider_label(obj: stt.STT | tts.TTS) -> str:
    """The provider-list entry that served the latest request of `obj` (a provider or a fallback adapter).

    For a single provider that is its own entry (e.g. `"piper"`, `"http://127.0.0.1:2022/v1"`); for an adapter
    from `build_stt`/`build_tts` it is the provider that most recently produced a result (the first one before
    any request). After a request that failed everywhere it still names the last provider that succeeded.
    A livekit `stt.StreamAdapter` (as in `stt_availability_changed` events) names the provider it wraps.
    """
    chain = chain_of(obj)
    if chain is not None:
        return chain.label
    if isinstance(obj, stt.StreamAdapter):
        return provider_label(obj.wrapped_stt)
    return entry_of(obj)


def provider_labels(obj: stt.STT | tts.TTS) -> list[str]:
    """All providers behind `obj`, in failover order."""
    chain = chain_of(obj)
    if chain is not None:
        return list(chain.labels)
    return [provider_label(obj)]
