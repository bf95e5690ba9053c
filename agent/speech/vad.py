"""Silero voice activity detection, with the same options in both paths.

- The local loop: `build_vad`, livekit-plugins-silero (its ONNX model ships inside the package, run by ONNX
  Runtime). Every call loads its own `silero.VAD` through the plugin's public `silero.VAD.load(...)`, with its own
  options: cheap (about 25 ms and 24 MB), done once for the server.
- The worker: `build_room_vad`, livekit-agents' own `inference.VAD`, the same Silero model run natively by
  `livekit-local-inference` (a livekit-agents dependency). Events and options are the same (checked side by side
  on speech: the same segments within one 32 ms window); it costs less per room, where the worker pays for every
  idle room: about 1.6 points of a core less per idle room in the real worker, and 4 MB of memory instead of 24
  (docs/performance.md).
  That package's models are licensed for use inside LiveKit Agents, which the worker is; the local loop keeps
  the plugin, whose MIT weights carry no such condition (docs/speech-providers.md).

A shared VAD per option set would not do, because `tune_vad` changes a VAD in place. For per-call changes on an
existing VAD (and its open streams) use `tune_vad`, the VADs' public `update_options`: no model reload.
"""

from __future__ import annotations

from typing import TypedDict

from livekit.agents import inference
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


class VADOptions(TypedDict):
    min_silence_duration: float
    activation_threshold: float
    deactivation_threshold: float


def vad_options(settings: Settings, *, silence_ms: int | None = None, aggressiveness: int | None = None) -> VADOptions:
    """The options both VADs are built with, from `settings` (or the overrides)."""
    threshold = activation_threshold(settings.vad_aggressiveness if aggressiveness is None else aggressiveness)
    return VADOptions(
        min_silence_duration=(settings.silence_ms if silence_ms is None else silence_ms) / 1000.0,
        activation_threshold=threshold,
        deactivation_threshold=deactivation_threshold(threshold),
    )


def build_vad(settings: Settings, *, silence_ms: int | None = None, aggressiveness: int | None = None) -> silero.VAD:
    """The local loop's VAD: a new livekit-plugins-silero VAD configured from `settings` (or the overrides)."""
    vad = silero.VAD.load(**vad_options(settings, silence_ms=silence_ms, aggressiveness=aggressiveness), force_cpu=True)
    assert isinstance(vad, silero.VAD)
    return vad


def build_room_vad(settings: Settings, *, silence_ms: int | None = None) -> inference.VAD:
    """The worker's VAD for one room: livekit-agents' native Silero (`inference.VAD`), configured as `build_vad`."""
    return inference.VAD(**vad_options(settings, silence_ms=silence_ms))


def tune_vad(
    vad: silero.VAD | inference.VAD, *, silence_ms: int | None = None, aggressiveness: int | None = None
) -> None:
    """Change silence/aggressiveness on `vad` and its open streams (cheap: no model reload)."""
    if silence_ms is not None:
        vad.update_options(min_silence_duration=silence_ms / 1000.0)
    if aggressiveness is not None:
        threshold = activation_threshold(aggressiveness)
        vad.update_options(activation_threshold=threshold, deactivation_threshold=deactivation_threshold(threshold))
