"""Short chimes that tell the user when listening starts and stops, generated with numpy (no sound files).

Shared by both paths: the local loop plays them on the speaker, the worker into the room.

Start: two rising notes; stop: two falling notes. Soft (-18 dBFS) sine tones with smooth edges, so they do not
click and the voice activity detector does not take them for speech.
"""

from __future__ import annotations

import numpy as np
from livekit import rtc

START_NOTES = (660.0, 880.0)
STOP_NOTES = (880.0, 587.33)
_NOTE_SECONDS = 0.07
_GAP_SECONDS = 0.02
_LEVEL = 10 ** (-18 / 20)


def _note(freq: float, rate: int) -> np.ndarray:
    n = int(_NOTE_SECONDS * rate)
    t = np.arange(n) / rate
    tone = np.sin(2 * np.pi * freq * t) + 0.25 * np.sin(4 * np.pi * freq * t)
    edge = max(1, int(0.01 * rate))
    envelope = np.ones(n)
    ramp = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, edge))
    envelope[:edge] = ramp
    envelope[-edge:] = ramp[::-1]
    return tone / 1.25 * envelope


def chime(notes: tuple[float, ...], rate: int) -> rtc.AudioFrame:
    gap = np.zeros(int(_GAP_SECONDS * rate))
    parts: list[np.ndarray] = []
    for i, freq in enumerate(notes):
        if i:
            parts.append(gap)
        parts.append(_note(freq, rate))
    samples = (np.concatenate(parts) * _LEVEL * 32767).astype(np.int16)
    return rtc.AudioFrame(samples.tobytes(), rate, 1, samples.size)


def listening_started(rate: int) -> rtc.AudioFrame:
    return chime(START_NOTES, rate)


def listening_stopped(rate: int) -> rtc.AudioFrame:
    return chime(STOP_NOTES, rate)
