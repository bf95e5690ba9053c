"""Side by side: the same reply endpointed like a fixed-silence-threshold tool, by our listener with the silence
rule, and by our listener with the end-of-turn model.

All three see the reply at real-time pace (half a second of silence, the reply, then silence), one after the
other, never at once, on the same Whisper model:

- **baseline**: webrtcvad (aggressiveness 2, 30 ms frames), the turn ends after 1 s of continuous non-speech
  frames, then the whole recording is transcribed — what a tool with a fixed silence threshold does;
- **silence** (ours, `VOICE_MCP_TURN_DETECTION=silence`): the real `mcp_bridge.local.listener.Listener` (Silero
  VAD, `Endpointer`, early transcription during pauses) reading 10 ms frames from `FrameSource`, a stand-in
  microphone, with the product defaults (`ListenOptions()`: silence 1000 ms, aggressiveness 2);
- **model** (ours, the default): the same listener, the Smart Turn model asked after 0.25 s of silence, the long
  bound 3000 ms.

Two corpora:
- complete replies of about 1, 3 and 8 s (`bench.speech.REPLY_TEXTS`): latency = text ready − the moment the
  reply's last voiced sample was fed (frame-source start + its offset). A frame is delivered when its last sample
  is due, as a sound card does, so the frame length is part of every number. Ratio rows are median(baseline) /
  median(side).
- replies with a thinking pause (`PAUSE_REPLIES`: a first part, 0.8–2 s of silence, the rest; half of them with
  "um"/"uh"/"hmm" before the pause): a **cut-off** is a transcript that lacks most of the words after the pause.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from livekit import rtc
from livekit.agents import vad as lk_vad

from agent.config import Settings
from agent.speech.turn_model import TurnModel
from mcp_bridge.converse_types import ListenOptions
from mcp_bridge.local.endpointing import EndpointConfig
from mcp_bridge.local.listener import Listener
from mcp_bridge.local.microphone import MicFrame
from mcp_bridge.local.transcriber import Transcriber

from .harness import Measurement
from .speech import RATE, Reply, Speech, normalise, voiced_bounds, wer

DEFAULT_VAD_AGGRESSIVENESS: int = Settings.model_fields["vad_aggressiveness"].default
"""What a call that leaves `vad_aggressiveness` unset gets (the setting's default)."""

LEAD_SILENCE = 0.5
TRAIL_SILENCE = 4.0
BASELINE_SILENCE = 1.0
BASELINE_AGGRESSIVENESS = 2
BASELINE_FRAME = 0.03
MAX_TURN_SILENCE_MS = 3000

PAUSE_REPLIES: list[tuple[str, str]] = [
    ("We could move it to, um,", "Thursday afternoon instead."),
    ("We could move it to", "Thursday afternoon instead."),
    ("I think the best option is, uh,", "the second one on the list."),
    ("The port number should be", "eight thousand and eighty."),
    ("Let me see, the file I want is, um,", "the configuration file."),
    ("Send the report to", "the whole team before noon."),
    ("Maybe we should, hmm,", "wait until tomorrow morning."),
    ("Please rename the folder to", "old projects."),
    ("Put the meeting on, uh,", "Friday after lunch."),
    ("I would rather keep", "the current name for now."),
]
"""(before the pause, after it). Every other one says "um"/"uh"/"hmm" before the pause."""
FILLERS = ("um", "uh", "hmm")
PAUSES = (0.8, 1.2, 1.5, 2.0)
"""Seconds of silence between the two parts (from the last voiced sample to the next)."""


def padded(reply: Reply) -> tuple[np.ndarray, float]:
    """(lead silence + reply + trailing silence, offset of the last voiced sample in it, seconds)."""
    lead = np.zeros(int(LEAD_SILENCE * RATE), dtype=np.int16)
    trail = np.zeros(int(TRAIL_SILENCE * RATE), dtype=np.int16)
    return np.concatenate([lead, reply.pcm, trail]), LEAD_SILENCE + reply.voiced_end


class FrameSource:
    """Stands in for `mcp_bridge.local.microphone.Microphone`: delivers `pcm` in 10 ms frames at real-time pace.

    `started` is the `perf_counter()` moment sample 0 was "captured"; sample k is due at `started + k / RATE`.
    After the audio runs out it delivers silence, like a microphone in a quiet room.
    """

    def __init__(self, pcm: np.ndarray, frame_seconds: float = 0.01) -> None:
        self.sample_rate = RATE
        self._pcm = pcm
        self._step = int(RATE * frame_seconds)
        self._pos = 0
        self.started = 0.0

    @property
    def audio_time(self) -> float:
        return self._pos / RATE

    def start(self) -> None:
        self.started = time.perf_counter()

    def due(self, sample: int) -> float:
        return self.started + sample / RATE

    def next_block(self) -> np.ndarray:
        block = self._pcm[self._pos : self._pos + self._step]
        if block.size < self._step:
            block = np.concatenate([block, np.zeros(self._step - block.size, dtype=np.int16)])
        return block

    async def read(self) -> MicFrame:
        end = self._pos + self._step
        delay = self.due(end) - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        block = self.next_block()
        frame = rtc.AudioFrame(block.tobytes(), RATE, 1, block.size)
        mic = MicFrame(frame, self._pos / RATE, time.perf_counter())
        self._pos = end
        return mic


@dataclass
class Outcome:
    latency_ms: float
    text: str
    early: bool | None = None
    stt_after_end_ms: float | None = None
    ended_by: str | None = None
    model_ms: list[float] = field(default_factory=list)


async def baseline(speech: Speech, reply: Reply) -> Outcome:
    """webrtcvad + 1 s fixed silence threshold, then STT on the whole recording."""
    import webrtcvad

    vad = webrtcvad.Vad(BASELINE_AGGRESSIVENESS)
    pcm, voiced_end = padded(reply)
    source = FrameSource(pcm, BASELINE_FRAME)
    recorded: list[np.ndarray] = []
    speech_seen = False
    silent = 0.0
    source.start()
    while source.audio_time < pcm.size / RATE + 30:
        mic = await source.read()
        block = np.frombuffer(mic.frame.data, dtype=np.int16)
        recorded.append(block)
        if vad.is_speech(block.tobytes(), RATE):
            speech_seen, silent = True, 0.0
        elif speech_seen:
            silent += BASELINE_FRAME
            if silent >= BASELINE_SILENCE - 1e-9:
                break
    stop = time.perf_counter()
    audio = np.concatenate(recorded).astype(np.float32) / 32768.0
    transcript = await speech.stt.transcribe(audio)
    ready = time.perf_counter()
    return Outcome((ready - source.due(round(voiced_end * RATE))) * 1000, transcript.text, None, (ready - stop) * 1000)


async def ours(
    speech: Speech, vad: lk_vad.VAD, reply: Reply, recordings: Path, model: TurnModel | None = None
) -> Outcome:
    """The real listener (Silero VAD, our endpointing, early transcription; the turn model if given) on a
    real-time frame source."""
    pcm, voiced_end = padded(reply)
    source = FrameSource(pcm)
    opts = ListenOptions()
    config = EndpointConfig.from_options(
        max_seconds=opts.max_seconds,
        min_seconds=opts.min_seconds,
        silence_ms=opts.silence_ms,
        vad_aggressiveness=DEFAULT_VAD_AGGRESSIVENESS if opts.vad_aggressiveness is None else opts.vad_aggressiveness,
        silence_detection=opts.silence_detection,
        turn_model=model is not None,
        max_turn_silence_ms=MAX_TURN_SILENCE_MS,
    )
    loaded: asyncio.Future[TurnModel | None] | None = None
    if model is not None:
        loaded = asyncio.get_running_loop().create_future()
        loaded.set_result(model)
    listener = Listener(
        source, vad, Transcriber(speech.stt), config, recordings_dir=recordings, turn_model=loaded  # type: ignore[arg-type]
    )
    source.start()
    listener.start_listening()
    heard = await listener.run()
    latency = (heard.result_ready - source.due(round(voiced_end * RATE))) * 1000
    return Outcome(
        latency, heard.text, heard.early_transcript, (heard.result_ready - heard.turn_ended) * 1000,
        heard.ended_by, [ms for _, ms in heard.model_decisions],
    )


async def pause_replies(speech: Speech, count: int) -> list[tuple[Reply, str, bool]]:
    """(reply, the words after the pause, has a filler) for `count` pause replies, cycling texts and pauses."""
    out: list[tuple[Reply, str, bool]] = []
    for i in range(count):
        head_text, tail_text = PAUSE_REPLIES[i % len(PAUSE_REPLIES)]
        pause = PAUSES[i % len(PAUSES)]
        head, tail = await speech.reply(head_text), await speech.reply(tail_text)
        pcm = np.concatenate([
            head.pcm[: round(head.voiced_end * RATE)],
            np.zeros(round(pause * RATE), dtype=np.int16),
            tail.pcm[round(tail.voiced_start * RATE) :],
        ])
        start, end = voiced_bounds(pcm)
        filler = any(w in normalise(head_text).split() for w in FILLERS)
        out.append((Reply(f"{head_text} {tail_text}", pcm, start, end), tail_text, filler))
    return out


def cut_off(tail: str, text: str) -> bool:
    """The transcript lacks most of the words said after the pause."""
    said = normalise(text).split()
    words = normalise(tail).split()
    return sum(1 for w in words if w in said) < len(words) / 2


SIDES = ("baseline", "silence", "model")
NOTES = {
    "baseline": f"webrtcvad + {BASELINE_SILENCE:g} s silence, then STT of the whole recording",
    "silence": "ours, silence rule: Silero + our endpointing (silence 1 s), early transcription",
    "model": f"ours, Smart Turn after 0.25 s (long bound {MAX_TURN_SILENCE_MS} ms), early transcription",
}


async def _run(
    side: str, speech: Speech, vad: lk_vad.VAD, reply: Reply, tmp: Path, model: TurnModel
) -> Outcome:
    if side == "baseline":
        return await baseline(speech, reply)
    return await ours(speech, vad, reply, tmp, model if side == "model" else None)


async def _all_sides(
    speech: Speech, vad: lk_vad.VAD, reply: Reply, tmp: Path, model: TurnModel, turn: int
) -> dict[str, Outcome]:
    order = SIDES[turn % 3 :] + SIDES[: turn % 3]  # rotate, so no side always runs on a CPU another just warmed
    return {side: await _run(side, speech, vad, reply, tmp, model) for side in order}


async def run_side_by_side(
    speech: Speech, vad: lk_vad.VAD, *, iterations: int, pause_count: int | None = None
) -> list[Measurement]:
    rows: list[Measurement] = []
    every: dict[str, list[float]] = {side: [] for side in SIDES}
    model = await TurnModel.load()
    turn = 0
    try:
        with TemporaryDirectory(prefix="vmcp-bench-") as tmp:
            for seconds in (1, 3, 8):
                replies = await speech.replies(seconds, iterations)
                outcomes: dict[str, list[Outcome]] = {side: [] for side in SIDES}
                for reply in replies:
                    for side, outcome in (await _all_sides(speech, vad, reply, Path(tmp), model, turn)).items():
                        outcomes[side].append(outcome)
                    turn += 1
                voiced = np.mean([r.voiced_seconds for r in replies])
                for side in SIDES:
                    got = outcomes[side]
                    ms = [o.latency_ms for o in got]
                    every[side] += ms
                    early = sum(1 for o in got if o.early)
                    by = ", ".join(f"{k} {sum(1 for o in got if o.ended_by == k)}" for k in ("model", "silence"))
                    extra_notes = f"; early transcript used {early}/{len(got)}; ended by {by}"
                    if side == "baseline":
                        extra_notes = ""
                    rows += [
                        Measurement.of(
                            f"eos_to_text_{side}_{seconds}s", "ms", ms,
                            f"{NOTES[side]} (voiced {voiced:.1f} s){extra_notes}",
                            stt_after_turn_end_ms=[round(o.stt_after_end_ms or 0, 1) for o in got],
                            model_ms=[round(m, 1) for o in got for m in o.model_ms],
                            chart=True,
                        ),
                        Measurement.of(
                            f"wer_{side}_{seconds}s", "WER",
                            [wer(r.text, o.text) for r, o in zip(replies, got, strict=True)], "jiwer, normalised text",
                        ),
                    ]
                    if side != "baseline":
                        rows.append(
                            Measurement.single(
                                f"eos_to_text_ratio_{side}_{seconds}s", "ratio",
                                _ratio([o.latency_ms for o in outcomes["baseline"]], ms),
                                f"median baseline / median {side} (above 1: sooner than the baseline)",
                            )
                        )
            rows += [
                Measurement.single(
                    f"eos_to_text_ratio_{side}_all", "ratio", _ratio(every["baseline"], every[side]),
                    f"median baseline / median {side}, all lengths",
                )
                for side in ("silence", "model")
            ]
            rows += await _pause_set(speech, vad, Path(tmp), model, pause_count or len(PAUSE_REPLIES), turn)
    finally:
        await model.aclose()
    return rows


async def _pause_set(
    speech: Speech, vad: lk_vad.VAD, tmp: Path, model: TurnModel, count: int, turn: int
) -> list[Measurement]:
    cases = await pause_replies(speech, count)
    cut: dict[str, list[tuple[bool, bool]]] = {side: [] for side in SIDES}  # (filler, cut off)
    decision_ms: list[float] = []
    for i, (reply, tail, filler) in enumerate(cases):
        for side, outcome in (await _all_sides(speech, vad, reply, tmp, model, turn + i)).items():
            cut[side].append((filler, cut_off(tail, outcome.text)))
            decision_ms += outcome.model_ms
    rows: list[Measurement] = []
    for side in SIDES:
        for kind, keep in (("filler", True), ("plain", False)):
            flags = [float(c) for f, c in cut[side] if f == keep]
            rows.append(
                Measurement.single(
                    f"cutoff_rate_{side}_{kind}", "ratio", sum(flags) / len(flags) if flags else None,
                    f"{NOTES[side]}: share of {len(flags)} replies with a {min(PAUSES)}–{max(PAUSES)} s thinking "
                    f"pause {'after um/uh/hmm' if keep else 'with no filler'} whose words after the pause were lost",
                    cut=[int(c) for c in flags],
                )
            )
    rows.append(Measurement.of("turn_model_decision", "ms", decision_ms, "one Smart Turn decision (features + ONNX)"))
    return rows


def _ratio(base: list[float], mine: list[float]) -> float | None:
    if not base or not mine:
        return None
    ours_median = float(np.median(mine))
    return float(np.median(base)) / ours_median if ours_median > 0 else None
