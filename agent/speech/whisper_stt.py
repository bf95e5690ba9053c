"""Embedded speech-to-text: faster-whisper as a livekit-agents `stt.STT` (non-streaming, like a plugin).

One `WhisperModel` per (model, compute type) is shared by every `FasterWhisperSTT` in the process, so the
worker and the local loop never load it twice. Loading and inference run in worker threads, never on the event
loop. `transcribe()` takes a numpy buffer directly, for callers that transcribe while the user is still
speaking (incremental transcription during pauses).
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from livekit.agents import APIConnectionError, APIConnectOptions, stt
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer, is_given, shortuuid

from .audio import WHISPER_SAMPLE_RATE, buffer_to_whisper_input
from .errors import ProviderUnavailable
from .model_weights import BUNDLED_WHISPER, bundled_whisper_path, cached, is_cached

if TYPE_CHECKING:
    from faster_whisper import WhisperModel


@dataclass(frozen=True)
class Transcript:
    """Result of `FasterWhisperSTT.transcribe`."""

    text: str
    language: str
    audio_duration: float
    confidence: float


def _load_model(model: str, compute_type: str, cpu_threads: int) -> WhisperModel:
    from faster_whisper import WhisperModel

    source = str(bundled_whisper_path()) if model == BUNDLED_WHISPER else model
    return WhisperModel(source, device="cpu", compute_type=compute_type, cpu_threads=cpu_threads)


def _whisper_languages() -> frozenset[str] | None:
    """The language codes faster-whisper accepts (None: this version does not say; the model judges)."""
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES
    except ImportError:
        return None
    return frozenset(_LANGUAGE_CODES)


class FasterWhisperSTT(stt.STT):
    """faster-whisper on the CPU. `model="tiny.en"` uses the bundled weights; other names/paths load normally."""

    def __init__(
        self,
        *,
        model: str = BUNDLED_WHISPER,
        compute_type: str = "int8",
        language: str = "en",
        beam_size: int = 5,
        cpu_threads: int = 0,
    ) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        if model == BUNDLED_WHISPER:
            bundled_whisper_path()  # fail at build time, with the fix, when the bundled package is missing
        self._model_name = model
        self._compute_type = compute_type
        self._language = language
        self._beam_size = beam_size
        self._cpu_threads = cpu_threads
        self._prewarm_thread: threading.Thread | None = None

    @property
    def model(self) -> str:
        return self._model_name

    @property
    def provider(self) -> str:
        return "faster-whisper"

    @property
    def language(self) -> str:
        return self._language

    @property
    def english_only(self) -> bool:
        return self._model_name.endswith(".en")

    def update_options(self, *, language: str | None = None) -> None:
        """The language of later requests; `ValueError` when this model cannot transcribe it."""
        if language is None:
            return
        if self.english_only and language != "en":
            raise ValueError(f"the Whisper model {self._model_name} is English-only")
        known = _whisper_languages()
        if known is not None and language not in known:
            raise ValueError(f"Whisper does not know the language code {language!r}")
        self._language = language

    @property
    def _key(self) -> tuple[str, ...]:
        return ("faster-whisper", self._model_name, self._compute_type)

    @property
    def loaded(self) -> bool:
        return is_cached(self._key)

    def _model_sync(self) -> WhisperModel:
        return cached(self._key, lambda: _load_model(self._model_name, self._compute_type, self._cpu_threads))

    async def load(self) -> None:
        """Load the model (once per process) without blocking the event loop."""
        await asyncio.to_thread(self._model_sync)

    def prewarm(self) -> None:
        """Start loading the model in a background thread (livekit calls this before the first request)."""
        if self.loaded or (self._prewarm_thread and self._prewarm_thread.is_alive()):
            return
        self._prewarm_thread = threading.Thread(target=self._model_sync, name="whisper-load", daemon=True)
        self._prewarm_thread.start()

    def _transcribe_sync(self, audio: np.ndarray, language: str | None) -> Transcript:
        model = self._model_sync()
        segments, info = model.transcribe(
            audio,
            language=language or None,
            beam_size=self._beam_size,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        parts = list(segments)  # the generator does the decoding
        text = " ".join(s.text.strip() for s in parts if s.text.strip())
        confidence = float(np.mean([math.exp(s.avg_logprob) for s in parts])) if parts else 0.0
        return Transcript(
            text=text,
            language=info.language or (language or ""),
            audio_duration=audio.size / WHISPER_SAMPLE_RATE,
            confidence=min(max(confidence, 0.0), 1.0),
        )

    async def transcribe(self, audio: np.ndarray, *, language: str | None = None) -> Transcript:
        """Transcribe float32 mono 16 kHz samples in [-1, 1] (e.g. the speech heard so far)."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        return await asyncio.to_thread(self._transcribe_sync, audio, language or self._language)

    async def _recognize_impl(
        self,
        buffer: AudioBuffer,
        *,
        language: NotGivenOr[str] = NOT_GIVEN,
        conn_options: APIConnectOptions,
    ) -> stt.SpeechEvent:
        try:
            audio = buffer_to_whisper_input(buffer)
            result = await self.transcribe(audio, language=language if is_given(language) else None)
        except ProviderUnavailable as exc:
            raise APIConnectionError(str(exc), retryable=False) from exc
        except (RuntimeError, ValueError, OSError) as exc:
            raise APIConnectionError(f"faster-whisper failed: {exc}", retryable=False) from exc
        return stt.SpeechEvent(
            type=stt.SpeechEventType.FINAL_TRANSCRIPT,
            request_id=shortuuid(),
            alternatives=[
                stt.SpeechData(
                    language=result.language,
                    text=result.text,
                    start_time=0.0,
                    end_time=result.audio_duration,
                    confidence=result.confidence,
                )
            ],
        )
