"""Speech providers as livekit-agents components, shared by the livekit worker and the local loop.

Public API (see docs/speech-providers.md):

- `build_stt(settings, *, vad=None) -> stt.STT`, `build_tts(settings) -> tts.TTS`,
  `build_vad(settings, *, silence_ms=None, aggressiveness=None) -> silero.VAD` (the local loop's),
  `build_room_vad(settings, *, silence_ms=None) -> inference.VAD` (the worker's), `tune_vad(vad, ...)`
- `provider_label(obj) -> str`: which provider-list entry served the latest request
- `FasterWhisperSTT`, `PiperTTS`, `EspeakTTS`: the embedded providers
- `check_providers(settings) -> list[ProviderStatus]`: health for `voice-mcp doctor` / `voice_status`
- `ProviderUnavailable`: a provider cannot be built (carries `.fix`); request failures stay livekit's
  `APIError` family (`APIConnectionError`, `APIStatusError`, `APITimeoutError`).
"""

from .builders import build_one_stt, build_one_tts, build_stt, build_tts
from .errors import ProviderUnavailable
from .espeak_tts import EspeakTTS
from .failover import provider_label, provider_labels
from .health import ProviderStatus, check_providers
from .piper_tts import PiperTTS
from .vad import build_room_vad, build_vad, tune_vad
from .whisper_stt import FasterWhisperSTT, Transcript

__all__ = [
    "EspeakTTS",
    "FasterWhisperSTT",
    "PiperTTS",
    "ProviderStatus",
    "ProviderUnavailable",
    "Transcript",
    "build_one_stt",
    "build_one_tts",
    "build_room_vad",
    "build_stt",
    "build_tts",
    "build_vad",
    "check_providers",
    "provider_label",
    "provider_labels",
    "tune_vad",
]
