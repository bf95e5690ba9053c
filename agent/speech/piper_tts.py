"""Embedded text-to-speech: Piper as a livekit-agents `tts.TTS` (non-streaming input, audio per sentence).

Piper synthesises one chunk per sentence; each chunk is handed to livekit's `AudioEmitter` as soon as it exists,
so the first sentence plays while the rest is still being synthesised. The voice (ONNX session) is loaded once
per process, lazily and off the event loop.

`piper-tts` is GPL-3.0-or-later, so it is not a core dependency: it comes with the extra
`voice-mcp-bridge[offline]` (with the bundled voice). Without it, building a `PiperTTS` raises `ProviderUnavailable`
and the next TTS in the list (by default espeak-ng) serves.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from livekit.agents import DEFAULT_API_CONNECT_OPTIONS, APIConnectionError, APIConnectOptions, tts
from livekit.agents.utils import shortuuid

from .errors import ProviderUnavailable
from .model_weights import BUNDLED_PIPER_VOICE, OFFLINE_FIX, cached, is_cached, piper_voice_paths

if TYPE_CHECKING:
    from piper import AudioChunk, PiperVoice


@dataclass
class _LoadedVoice:
    voice: PiperVoice
    lock: threading.Lock  # piper's phonemizer (espeak bridge) is not known to be thread-safe


PIPER_FIX = f"{OFFLINE_FIX} (piper-tts is GPL-3.0-or-later, hence optional), or use espeak / a server URL"


def require_piper() -> None:
    """`ProviderUnavailable` (with the fix) when the `piper` package (piper-tts) cannot be imported."""
    try:
        import piper  # noqa: F401
    except ImportError as exc:
        raise ProviderUnavailable("piper", f"piper-tts is not installed ({exc})", PIPER_FIX) from None


def _load_voice(model: Path, config: Path) -> _LoadedVoice:
    from piper import PiperVoice

    return _LoadedVoice(voice=PiperVoice.load(model, config_path=config), lock=threading.Lock())


def _voice_for(model: Path, config: Path) -> _LoadedVoice:
    """The loaded voice for these files (once per process)."""
    return cached(("piper", str(model)), lambda: _load_voice(model, config))


def _read_voice_config(config_path: Path) -> tuple[int, float]:
    """(sample rate, base length scale) from a Piper voice's .onnx.json."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        return int(config["audio"]["sample_rate"]), float(config.get("inference", {}).get("length_scale", 1.0))
    except (OSError, ValueError, KeyError) as exc:
        problem = f"unreadable voice config {config_path}: {exc}"
        raise ProviderUnavailable("piper", problem, "reinstall the voice") from exc


class PiperTTS(tts.TTS):
    """Piper voice. `voice="en_US-joe-medium"` uses the bundled voice; otherwise a path to a `.onnx` voice."""

    def __init__(self, *, voice: str = BUNDLED_PIPER_VOICE, speed: float = 1.0) -> None:
        require_piper()
        model_path, config_path = piper_voice_paths(voice)  # ProviderUnavailable, with the fix, if missing
        sample_rate, self._base_length_scale = _read_voice_config(config_path)
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False), sample_rate=sample_rate, num_channels=1)
        self._voice_name = voice
        self._model_path = model_path
        self._config_path = config_path
        self._speed = speed
        self._prewarm_thread: threading.Thread | None = None

    @property
    def model(self) -> str:
        return self._voice_name

    @property
    def provider(self) -> str:
        return "piper"

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def voice(self) -> str:
        return self._voice_name

    def update_options(self, *, speed: float | None = None, voice: str | None = None) -> None:
        """Change the speaking rate (1.0 = the voice's own; 2.0 = twice as fast) and/or the voice (the bundled
        name or a .onnx path, at this TTS's sample rate) for later requests. Raises (changing nothing) when the
        voice cannot be used."""
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive")
        if voice is not None and voice != self._voice_name:
            model_path, config_path = piper_voice_paths(voice)
            sample_rate, length_scale = _read_voice_config(config_path)
            if sample_rate != self.sample_rate:
                raise ValueError(f"voice {voice} speaks at {sample_rate} Hz, this Piper TTS at {self.sample_rate} Hz")
            self._voice_name, self._model_path, self._config_path = voice, model_path, config_path
            self._base_length_scale = length_scale
        if speed is not None:
            self._speed = speed

    @property
    def _key(self) -> tuple[str, ...]:
        return ("piper", str(self._model_path))

    @property
    def loaded(self) -> bool:
        return is_cached(self._key)

    def _voice_sync(self) -> _LoadedVoice:
        return _voice_for(self._model_path, self._config_path)

    async def load(self) -> None:
        """Load the voice (once per process) without blocking the event loop."""
        await asyncio.to_thread(self._voice_sync)

    def prewarm(self) -> None:
        if self.loaded or (self._prewarm_thread and self._prewarm_thread.is_alive()):
            return
        self._prewarm_thread = threading.Thread(target=self._voice_sync, name="piper-load", daemon=True)
        self._prewarm_thread.start()

    def synthesize(
        self, text: str, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
    ) -> PiperChunkedStream:
        return PiperChunkedStream(tts=self, input_text=text, conn_options=conn_options)


class PiperChunkedStream(tts.ChunkedStream):
    """One synthesis request. `sentences_done` counts the sentences synthesised so far."""

    def __init__(self, *, tts: PiperTTS, input_text: str, conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._piper = tts
        self._length_scale = tts._base_length_scale / tts.speed
        self._voice_files = (tts._model_path, tts._config_path)  # a per-call voice change after this is not ours
        self.sentences_done = 0

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        from piper import SynthesisConfig

        output_emitter.initialize(
            request_id=shortuuid(),
            sample_rate=self._piper.sample_rate,
            num_channels=1,
            mime_type="audio/pcm",
        )
        try:
            loaded = await asyncio.to_thread(_voice_for, *self._voice_files)
            syn_config = SynthesisConfig(length_scale=self._length_scale)
            chunks: Iterator[AudioChunk] = iter(loaded.voice.synthesize(self.input_text, syn_config))

            def next_chunk() -> AudioChunk | None:
                with loaded.lock:
                    return next(chunks, None)

            while (chunk := await asyncio.to_thread(next_chunk)) is not None:
                self.sentences_done += 1
                output_emitter.push(chunk.audio_int16_bytes)
                output_emitter.flush()
        except ProviderUnavailable as exc:
            raise APIConnectionError(str(exc), retryable=False) from exc
        except (RuntimeError, ValueError, OSError) as exc:
            raise APIConnectionError(f"piper failed: {exc}", retryable=False) from exc
