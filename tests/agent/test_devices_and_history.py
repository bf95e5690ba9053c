"""The worker's multi-device pieces that need no room: the transcript history a new device gets, the level meter,
and the audio input that hears only the active device."""

from __future__ import annotations

import json

import numpy as np
from livekit import rtc

from agent.devices import FRAME_MS, SAMPLE_RATE, SPEECH_FRAMES, SPEECH_LEVEL_DBFS, DeviceAudioInput, level_dbfs
from agent.history import HISTORY_TURNS, TranscriptHistory


def test_the_history_keeps_the_last_turns_and_joins_one_sides_parts() -> None:
    history = TranscriptHistory()
    history.add("assistant", "Part one.", "agent", at=1.0)
    history.add("assistant", "Part two.", "agent", at=2.0)
    history.add("user", "Yes.", "alice-phone", at=3.0)
    history.add("user", "And more.", "alice-desktop", at=4.0)
    history.add("user", "   ", "alice-desktop", at=5.0)
    assert json.loads(history.to_json()) == [
        {"role": "assistant", "text": "Part one. Part two.", "identity": "agent", "at": 2.0},
        {"role": "user", "text": "Yes.", "identity": "alice-phone", "at": 3.0},
        {"role": "user", "text": "And more.", "identity": "alice-desktop", "at": 4.0},
    ]
    for i in range(HISTORY_TURNS * 3):
        history.add("assistant" if i % 2 else "user", f"turn {i}", "x")
    turns = history.turns()
    assert len(turns) == HISTORY_TURNS and turns[-1].text == f"turn {HISTORY_TURNS * 3 - 1}"


def test_the_level_meter_tells_speech_from_room_noise() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(1200) * 30).astype(np.int16)
    voice = (np.sin(np.linspace(0, 200, 1200)) * 3000).astype(np.int16)
    assert level_dbfs(noise) < SPEECH_LEVEL_DBFS < level_dbfs(voice)
    assert level_dbfs(np.zeros(0, dtype=np.int16)) < SPEECH_LEVEL_DBFS


class _NoRoom:
    """DeviceAudioInput only subscribes to room events; these tests feed frames themselves."""

    def __init__(self) -> None:
        self.remote_participants: dict[str, object] = {}

    def on(self, *_args: object) -> None: ...

    def off(self, *_args: object) -> None: ...


SAMPLES = SAMPLE_RATE * FRAME_MS // 1000


class Frames:
    """Frames numbered by the test (gain control rewrites their samples, so they are told apart by identity)."""

    def __init__(self) -> None:
        self.made: dict[int, int] = {}

    def make(self, level: int, number: int) -> rtc.AudioFrame:
        samples = (np.sin(np.linspace(0, 300, SAMPLES)) * level).astype(np.int16)
        frame = rtc.AudioFrame(samples.tobytes(), SAMPLE_RATE, 1, SAMPLES)
        self.made[id(frame)] = number
        return frame

    def heard(self, device_input: DeviceAudioInput) -> list[int]:
        out = []
        while not device_input._queue.empty():
            out.append(self.made[id(device_input._queue.get_nowait())])
        return out


async def test_only_the_active_device_is_heard_and_a_device_that_speaks_is_reported() -> None:
    spoke: list[str] = []
    agent_speaking = False
    device_input = DeviceAudioInput(
        _NoRoom(),  # type: ignore[arg-type]
        is_device=lambda _p: True,
        on_speech=spoke.append,
        quiet=lambda: agent_speaking,
    )
    frames = Frames()
    device_input.set_active("phone")
    device_input.frame_arrived("phone", frames.make(3000, 1))
    device_input.frame_arrived("desktop", frames.make(20, 2))  # room noise on the other device
    assert frames.heard(device_input) == [1] and spoke == []

    agent_speaking = True  # the agent's voice reaches the desktop's microphone: not the user
    for _ in range(SPEECH_FRAMES * 3):
        device_input.frame_arrived("desktop", frames.make(3000, 3))
    assert spoke == [] and frames.heard(device_input) == []

    agent_speaking = False
    for number in range(10, 10 + SPEECH_FRAMES):
        device_input.frame_arrived("desktop", frames.make(3000, number))
    assert spoke == ["desktop"] and frames.heard(device_input) == [], "reported, not heard until made active"

    device_input.set_active("desktop")  # what the linker does: the pre-roll first, then live frames
    device_input.frame_arrived("desktop", frames.make(3000, 20))
    device_input.frame_arrived("phone", frames.make(3000, 21))
    assert frames.heard(device_input) == [10, 11, 12, 20], "never two devices at once"

    device_input.on_detached()
    device_input.frame_arrived("desktop", frames.make(3000, 30))
    assert frames.heard(device_input) == [], "a detached input drops audio instead of piling it up"
    await device_input.aclose()
