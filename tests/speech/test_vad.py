"""Silero VAD on real synthesised speech padded with silence: the local loop's (`build_vad`, livekit-plugins-silero)
and the worker's (`build_room_vad`, livekit-agents' native `inference.VAD`) behave alike on the same options."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import vad as lk_vad
from livekit.plugins import silero

from agent.speech import build_room_vad, build_vad, tune_vad
from agent.speech.vad import activation_threshold
from tests.speech_fixtures import clean_settings

INFERENCE_RATE = 16000


def padded(frame: rtc.AudioFrame, *, before: float, after: float, gap_copy: float | None = None) -> np.ndarray:
    """`before` s of silence, the speech (twice with `gap_copy` s between, if given), `after` s of silence."""
    sr = frame.sample_rate
    speech = np.frombuffer(frame.data, dtype=np.int16)
    parts = [np.zeros(int(sr * before), np.int16), speech]
    if gap_copy is not None:
        parts += [np.zeros(int(sr * gap_copy), np.int16), speech]
    parts.append(np.zeros(int(sr * after), np.int16))
    return np.concatenate(parts)


async def run_vad(vad: lk_vad.VAD, samples: np.ndarray, sample_rate: int) -> list[lk_vad.VADEvent]:
    stream = vad.stream()
    step = sample_rate // 50  # 20 ms frames, as a microphone or a LiveKit track delivers them
    for i in range(0, samples.size, step):
        chunk = samples[i : i + step]
        stream.push_frame(rtc.AudioFrame(chunk.tobytes(), sample_rate, 1, chunk.size))
    stream.end_input()
    events = [ev async for ev in stream if ev.type != lk_vad.VADEventType.INFERENCE_DONE]
    await stream.aclose()
    return events


BuildVAD = Callable[..., lk_vad.VAD]
BOTH_VADS = pytest.mark.parametrize("build", [build_vad, build_room_vad], ids=["local-plugin", "room-native"])


@BOTH_VADS
async def test_speech_is_bracketed_by_start_and_end(piper_sentence: rtc.AudioFrame, build: BuildVAD) -> None:
    settings = clean_settings(silence_ms=500)
    audio = padded(piper_sentence, before=1.0, after=2.0)

    events = await run_vad(build(settings), audio, piper_sentence.sample_rate)

    assert [e.type for e in events] == [lk_vad.VADEventType.START_OF_SPEECH, lk_vad.VADEventType.END_OF_SPEECH]
    start, end = events
    speech_end = 1.0 + piper_sentence.duration
    assert 0.9 <= start.samples_index / INFERENCE_RATE <= 1.5
    # END fires once `silence_ms` of silence followed the speech
    assert speech_end - 0.5 <= end.samples_index / INFERENCE_RATE - end.silence_duration <= speech_end + 0.1
    assert 0.45 <= end.silence_duration <= 0.7
    assert end.speech_duration >= piper_sentence.duration - 0.6
    assert sum(f.duration for f in end.frames) >= end.speech_duration  # the utterance itself, for the STT


@BOTH_VADS
async def test_silence_setting_decides_whether_a_pause_ends_the_turn(
    piper_sentence: rtc.AudioFrame, build: BuildVAD
) -> None:
    audio = padded(piper_sentence, before=0.5, after=2.0, gap_copy=0.9)
    vad = build(clean_settings(silence_ms=400))

    short = await run_vad(vad, audio, piper_sentence.sample_rate)
    tune_vad(vad, silence_ms=1500)  # per-call change on the same VAD, no model reload
    long = await run_vad(vad, audio, piper_sentence.sample_rate)

    ends = lk_vad.VADEventType.END_OF_SPEECH
    assert [e.type for e in short].count(ends) == 2  # the 0.9 s pause ended the first utterance
    assert [e.type for e in long].count(ends) == 1  # with 1.5 s it is one utterance
    assert vad.min_silence_duration == 1.5


async def test_the_worker_and_the_local_loop_find_the_same_segments(piper_sentence: rtc.AudioFrame) -> None:
    settings = clean_settings(silence_ms=250)
    audio = padded(piper_sentence, before=0.5, after=1.0, gap_copy=0.6)

    local = await run_vad(build_vad(settings), audio, piper_sentence.sample_rate)
    room = await run_vad(build_room_vad(settings), audio, piper_sentence.sample_rate)

    assert [e.type for e in room] == [e.type for e in local]
    assert [e.type for e in room].count(lk_vad.VADEventType.END_OF_SPEECH) >= 2  # one or more per copy
    window = 512  # one 32 ms Silero window at 16 kHz
    for in_room, in_local in zip(room, local, strict=True):
        assert abs(in_room.samples_index - in_local.samples_index) <= 2 * window, (in_room, in_local)


def test_aggressiveness_maps_to_activation_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    thresholds = [activation_threshold(level) for level in range(4)]
    assert thresholds == sorted(thresholds) and len(set(thresholds)) == 4

    asked: list[dict[str, Any]] = []
    real_load = silero.VAD.load

    def recording_load(**options: Any) -> lk_vad.VAD:  # the plugin's public constructor, called through
        asked.append(options)
        return real_load(**options)

    monkeypatch.setattr(silero.VAD, "load", recording_load)
    loud = build_vad(clean_settings(vad_aggressiveness=3, silence_ms=700))
    quiet = build_vad(clean_settings(), aggressiveness=0, silence_ms=300)

    assert asked[0]["activation_threshold"] == thresholds[3] and asked[1]["activation_threshold"] == thresholds[0]
    assert loud.min_silence_duration == 0.7 and quiet.min_silence_duration == 0.3
    assert loud is not quiet  # each VAD has its own options: tuning one leaves the other alone
    tune_vad(quiet, silence_ms=900)
    assert loud.min_silence_duration == 0.7 and quiet.min_silence_duration == 0.9
