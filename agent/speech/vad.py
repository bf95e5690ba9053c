"""Silero voice activity detection from livekit-plugins-silero (its ONNX model ships inside the package).

The ONNX session is created once per process; every `build_vad` call returns a new `silero.VAD` with its own
options that shares that session, so per-conversation settings cost nothing. For per-call changes on an existing
VAD (and its open streams) use `tune_vad`, which is silero's `update_options`.
"""

from __future__ import annotations

import dataclasses

from livekit.plugins import silero

from agent.config import Settings

from .models import cached

# vad_aggressiveness 0..3 -> probability above which a 32 ms window counts as speech (silero's default is 0.5)
ACTIVATION_THRESHOLDS = (0.3, 0.4, 0.5, 0.65)


def activation_threshold(aggressiveness: int) -> float:
    if not 0 <= aggressiveness <= 3:
        raise ValueError("vad aggressiveness must be 0..3")
    return ACTIVATION_THRESHOLDS[aggressiveness]


def _base_vad() -> silero.VAD:
    vad = silero.VAD.load(force_cpu=True)
    assert isinstance(vad, silero.VAD)
    return vad


def build_vad(settings: Settings, *, silence_ms: int | None = None, aggressiveness: int | None = None) -> silero.VAD:
    """A Silero VAD configured from `settings` (or the overrides); the model is loaded once per process."""
    base = cached(("silero-vad",), _base_vad)
    threshold = activation_threshold(settings.vad_aggressiveness if aggressiveness is None else aggressiveness)
    opts = dataclasses.replace(
        base._opts,
        min_silence_duration=(settings.silence_ms if silence_ms is None else silence_ms) / 1000.0,
        activation_threshold=threshold,
        deactivation_threshold=max(threshold - 0.15, 0.01),
    )
    return silero.VAD(session=base._onnx_session, opts=opts)


def tune_vad(vad: silero.VAD, *, silence_ms: int | None = None, aggressiveness: int | None = None) -> None:
    """Change silence/aggressiveness on `vad` and its open streams (cheap: no model reload)."""
    if silence_ms is not None:
        vad.update_options(min_silence_duration=silence_ms / 1000.0)
    if aggressiveness is not None:
        threshold = activation_threshold(aggressiveness)
        vad.update_options(activation_threshold=threshold, deactivation_threshold=max(threshold - 0.15, 0.01))
