"""Build the configured speech providers, in failover order, as livekit-agents components.

`build_stt(settings)` / `build_tts(settings)` return one provider when one is configured, otherwise livekit's own
`stt.FallbackAdapter` / `tts.FallbackAdapter` around them (first entry first; for STT inside a VAD
`StreamAdapter`, see `agent.speech.failover`). The same objects serve the
livekit-agents worker (`AgentSession(stt=..., tts=..., vad=...)`) and the local loop (`await stt.recognize(...)`,
`tts.synthesize(text)`). Which provider served a request: `provider_label` (`agent.speech.failover`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from livekit.agents import stt, tts, vad

from agent.config import Settings

from .errors import ProviderUnavailable
from .espeak_tts import EspeakTTS
from .failover import FallbackSTT, FallbackTTS, record_entry
from .openai_compat import is_url, openai_stt, openai_tts
from .piper_tts import PiperTTS
from .vad import build_vad
from .whisper_stt import FasterWhisperSTT

logger = logging.getLogger(__name__)


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
    record_entry(entry, provider)
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
    record_entry(entry, provider)
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


def build_stt(settings: Settings, *, vad: vad.VAD | None = None) -> stt.STT:
    """STT providers from `settings.stt`, in order; more than one are wrapped for failover (`FallbackSTT`).

    Providers that cannot be built (missing package/key) are skipped with a warning; `ProviderUnavailable` if
    none is left. Our providers are non-streaming, so failover needs a VAD to cut utterances for `stream()`:
    pass the session's `vad`, or one is built from the settings. Each provider gets one attempt (for servers
    every timeout phase is capped at `provider_timeout`, see `openai_compat`) before the next one is asked.
    """
    providers: list[stt.STT] = _build_all("stt", settings.stt, lambda e: build_one_stt(e, settings))
    if len(providers) == 1:
        return providers[0]
    return FallbackSTT(providers, vad=vad or build_vad(settings), timeout=settings.provider_timeout)


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


