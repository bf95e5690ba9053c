"""Silero voice activity detection from livekit-plugins-silero (its ONNX model ships inside the package).

Every `build_vad` call loads its own `silero.VAD` through the plugin's public `silero.VAD.load(...)`, with its
own options. That is cheap enough not to share anything (about 25 ms and 9 MB of memory per call on a laptop
CPU), and it is done a handful of times per process: once for the server, once per worker process. A shared
VAD per option set would not do, because `tune_vad` changes a VAD in place. For per-call changes on an existing
VAD (and its open streams) use `tune_vad`, which is silero's public `update_options`: no model reload.
"""

from __future__ import annotations

from livekit.plugins import silero

from agent.config import Settings

# The one home of the VAD thresholds, for the worker's Silero VAD and the local loop's endpointing alike.
# vad_aggressiveness 0..3 -> probability above which a 32 ms window counts as speech (silero's default is 0.5)
ACTIVATION_THRESHOLDS = (0.3, 0.4, 0.5, 0.65)
DEACTIVATION_GAP = 0.15
"""Once speech started, a window stays speech down to this much below the activation threshold (hysteresis)."""
DEACTIVATION_FLOOR = 0.05


def activation_threshold(aggressiveness: int) -> float:
    """`ValueError` outside 0..3: the request models validate the range, so this is a caller's bug."""
    if not 0 <= aggressiveness <= 3:
        raise ValueError("vad aggressiveness must be 0..3")
    return ACTIVATION_THRESHOLDS[aggressiveness]


def deactivation_threshold(activation: float) -> float:
    return max(activation - DEACTIVATION_GAP, DEACTIVATION_FLOOR)


def build_vad(settings: Settings, *, silence_ms: int | None = None, aggressiveness: int | None = None) -> silero.VAD:
    """A new Silero VAD configured from `settings` (or the overrides)."""
    threshold = activation_threshold(settings.vad_aggressiveness if aggressiveness is None else aggressiveness)
    vad = silero.VAD.load(
        min_silence_duration=(settings.silence_ms if silence_ms is None else silence_ms) / 1000.0,
        activation_threshold=threshold,
        deactivation_threshold=deactivation_threshold(threshold),
        force_cpu=True,
    )
    assert isinstance(vad, silero.VAD)
    return vad


def tune_vad(vad: silero.VAD, *, silence_ms: int | None = None, aggressiveness: int | None = None) -> None:
    """Change silence/aggressiveness on `vad` and its open streams (cheap: no model reload)."""
    if silence_ms is not None:
        vad.update_options(min_silence_duration=silence_ms / 1000.0)
    if aggressiveness is not None:
        threshold = activation_threshold(aggressiveness)
        vad.update_options(activation_threshold=threshold, deactivation_threshold=deactivation_threshold(threshold))
