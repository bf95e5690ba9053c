"""Per-call voice, speed and language on the shared providers: set for one call, restored after it.

Both paths use this — the local loop around one exchange, the worker around one converse call — so an option
means the same thing everywhere. Every provider behind a failover adapter is asked on its own (`update_options`);
`CallOptions` remembers which provider-list entries took each option:

- an option that no provider can take is refused before anything is spoken (`OptionRefused`, with a fix);
- an option that only some providers can take is honoured when one of those serves; when another one served
  (failover), `ignored()` names it, so the result reports it instead of dropping it.

Callers must not run two calls on the same providers at once (both paths serve one call at a time).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from livekit.agents import stt, tts

from agent.protocol import OptionName, SpeakOptions

from .errors import ProviderUnavailable
from .failover import chain_of, entry_of, provider_label

logger = logging.getLogger(__name__)


class OptionRefused(ValueError):
    """No provider can honour a per-call option. `fix` says what to do instead."""

    def __init__(self, option: OptionName, problem: str, fix: str) -> None:
        self.option: OptionName = option
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}. {fix}")


def providers_behind(component: stt.STT | tts.TTS) -> list[stt.STT | tts.TTS]:
    """The providers a (possibly failover-wrapped) STT/TTS asks, in order."""
    chain = chain_of(component)
    if chain is not None:
        return list(chain.providers)
    if isinstance(component, stt.StreamAdapter):
        return providers_behind(component.wrapped_stt)
    if isinstance(component, tts.StreamAdapter):
        return providers_behind(component.wrapped_tts)
    inner = getattr(component, "_tts_instances", None) or getattr(component, "_stt_instances", None)
    if inner:  # a livekit FallbackAdapter built by somebody else
        return [leaf for provider in inner for leaf in providers_behind(provider)]
    return [component]


@dataclass
class _Applied:
    option: OptionName
    value: object
    accepted: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    undo: list[Callable[[], None]] = field(default_factory=list)


_FIXES: dict[OptionName, str] = {
    "voice": "Leave `voice` out to use the configured voice, or name one the configured TTS provider has "
    "(Piper: a .onnx voice path; espeak: an espeak-ng voice such as en-gb; OpenAI: alloy, nova, …).",
    "speed": "Leave `speed` out, or configure a TTS provider that can change its rate (piper, espeak, openai).",
    "language": "Leave `language` out, or configure a multilingual STT model (e.g. VOICE_MCP_STT_MODEL=tiny "
    "instead of the English-only tiny.en).",
}


class CallOptions:
    """The per-call options applied to one TTS and one STT (either may be None); `restore()` undoes them."""

    def __init__(self, *, tts_: tts.TTS | None = None, stt_: stt.STT | None = None) -> None:
        self._tts = tts_
        self._stt = stt_
        self._applied: list[_Applied] = []

    def apply(self, speak: SpeakOptions, *, language: str | None = None) -> None:
        """Set the options on every provider that can take them; `OptionRefused` (nothing left applied) when a
        given option suits none of them."""
        try:
            if self._tts is not None:
                if speak.voice is not None:
                    self._set(self._tts, "voice", "voice", speak.voice)
                if speak.speed is not None:
                    self._set(self._tts, "speed", "speed", speak.speed)
            if self._stt is not None and language is not None:
                self._set(self._stt, "language", "language", language)
        except OptionRefused:
            self.restore()
            raise

    def _set(self, component: stt.STT | tts.TTS, option: OptionName, attribute: str, value: object) -> None:
        applied = _Applied(option, value)
        self._applied.append(applied)
        for provider in providers_behind(component):
            entry = entry_of(provider)
            if not hasattr(provider, attribute) or not hasattr(provider, "update_options"):
                applied.problems.append(f"{entry} cannot change its {option}")
                continue
            before = getattr(provider, attribute)
            if before == value:
                applied.accepted.add(entry)
                continue
            try:
                provider.update_options(**{attribute: value})
            except (TypeError, ValueError, ProviderUnavailable) as exc:
                applied.problems.append(f"{entry}: {exc}")
                continue
            applied.accepted.add(entry)
            applied.undo.append(_undo(provider, attribute, before))
        if not applied.accepted:
            raise OptionRefused(
                option, f"no configured provider can take {option}={value!r} ({'; '.join(applied.problems)})",
                _FIXES[option],
            )
        if applied.problems:
            logger.info("%s=%r only on %s (%s)", option, value, sorted(applied.accepted), "; ".join(applied.problems))

    def ignored(self, *, spoke: bool, transcribed: bool) -> list[OptionName]:
        """The options the provider that actually served could not honour (failover to one that cannot)."""
        served = {
            "voice": self._served(self._tts) if spoke else None,
            "speed": self._served(self._tts) if spoke else None,
            "language": self._served(self._stt) if transcribed else None,
        }
        return [a.option for a in self._applied if (who := served[a.option]) is not None and who not in a.accepted]

    @staticmethod
    def _served(component: stt.STT | tts.TTS | None) -> str | None:
        return None if component is None else provider_label(component)

    def restore(self) -> None:
        applied, self._applied = self._applied, []
        for change in reversed(applied):
            for undo in reversed(change.undo):
                try:
                    undo()
                except Exception as exc:  # a provider that cannot go back keeps the call's value; say so
                    logger.warning("could not restore %s after the call: %s", change.option, exc)


def _undo(provider: object, attribute: str, before: object) -> Callable[[], None]:
    return lambda: provider.update_options(**{attribute: before})  # type: ignore[attr-defined]


@contextlib.contextmanager
def call_options(
    speak: SpeakOptions, *, language: str | None = None, tts_: tts.TTS | None = None, stt_: stt.STT | None = None
) -> Iterator[CallOptions]:
    """`CallOptions` applied for the duration of the block (raises `OptionRefused` before it starts)."""
    options = CallOptions(tts_=tts_, stt_=stt_)
    options.apply(speak, language=language)
    try:
        yield options
    finally:
        options.restore()
