"""Side by side: the same reply endpointed like a fixed-silence-threshold tool, and by our listener.

Both see the reply at real-time pace (half a second of silence, the reply, then silence), one after the other,
never at once, on the same Whisper model:

- **baseline**: webrtcvad (aggressiveness 2, 30 ms frames), the turn ends after 1 s of continuous non-speech
  frames, then the whole recording is transcribed — what a tool with a fixed silence threshold does;
- **ours**: the real `mcp_bridge.local.listener.Listener` (Silero VAD, `Endpointer`, early transcription during
  pauses) reading 10 ms frames from `FrameSource`, a stand-in microphone, with the product defaults
  (`ListenOptions()`: silence 1000 ms, aggressiveness 2).

Latency = text ready − the moment the reply's last voiced sample was fed (frame-source start + its offset). A
frame is delivered when its last sample is due, as a sound card does, so the frame length is part of both
numbers. The ratio row is median(baseline) / median(ours).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory

import numpy as np
from livekit import rtc
from livekit.agents import vad as lk_vad

from mcp_bridge.local.endpointing import EndpointConfig
from mcp_bridge.local.listener import Listener
from mcp_bridge.local.microphone import MicFrame
from mcp_bridge.local.transcriber import Transcriber
from mcp_bridge.models import ListenOptions

from .harness import Measurement
from .speech import RATE, Reply, Speech, wer

LEAD_SILENCE = 0.5
TRAIL_SILENCE = 4.0
BASELINE_SILENCE = 1.0
BASELINE_AGGRESSIVENESS = 2
BASELINE_FRAME = 0.03


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


async def ours(speech: Speech, vad: lk_vad.VAD, reply: Reply, recordings: Path) -> Outcome:
    """The real listener (Silero VAD, our endpointing, early transcription) on a real-time frame source."""
    pcm, voiced_end = padded(reply)
    source = FrameSource(pcm)
    opts = ListenOptions()
    config = EndpointConfig.from_options(
        max_seconds=opts.max_seconds,
        min_seconds=opts.min_seconds,
        silence_ms=opts.silence_ms,
        vad_aggressiveness=opts.vad_aggressiveness,
        silence_detection=opts.silence_detection,
    )
    listener = Listener(source, vad, Transcriber(speech.stt), config, recordings_dir=recordings)  # type: ignore[arg-type]
    source.start()
    listener.start_listening()
    heard = await listener.run()
    latency = (heard.result_ready - source.due(round(voiced_end * RATE))) * 1000
    return Outcome(latency, heard.text, heard.early_transcript, (heard.result_ready - heard.turn_ended) * 1000)


async def run_side_by_side(speech: Speech, vad: lk_vad.VAD, *, iterations: int) -> list[Measurement]:
    rows: list[Measurement] = []
    all_base: list[float] = []
    all_ours: list[float] = []
    with TemporaryDirectory(prefix="vmcp-bench-") as tmp:
        for seconds in (1, 3, 8):
            base: list[Outcome] = []
            mine: list[Outcome] = []
            replies = await speech.replies(seconds, iterations)
            for i, reply in enumerate(replies):
                if i % 2 == 0:  # alternate the order so neither always runs on a CPU the other just warmed
                    base.append(await baseline(speech, reply))
                    mine.append(await ours(speech, vad, reply, Path(tmp)))
                else:
                    mine.append(await ours(speech, vad, reply, Path(tmp)))
                    base.append(await baseline(speech, reply))
            voiced = np.mean([r.voiced_seconds for r in replies])
            base_ms = [o.latency_ms for o in base]
            ours_ms = [o.latency_ms for o in mine]
            all_base += base_ms
            all_ours += ours_ms
            base_wer = [wer(r.text, o.text) for r, o in zip(replies, base, strict=True)]
            ours_wer = [wer(r.text, o.text) for r, o in zip(replies, mine, strict=True)]
            early = sum(1 for o in mine if o.early)
            rows += [
                Measurement.of(
                    f"eos_to_text_baseline_{seconds}s",
                    "ms",
                    base_ms,
                    f"webrtcvad + {BASELINE_SILENCE:g} s silence, then STT of the whole recording "
                    f"(voiced {voiced:.1f} s)",
                    stt_after_turn_end_ms=[round(o.stt_after_end_ms or 0, 1) for o in base],
                    chart=True,
                ),
                Measurement.of(
                    f"eos_to_text_ours_{seconds}s",
                    "ms",
                    ours_ms,
                    f"Silero + our endpointing (silence 1 s), early transcript used {early}/{len(mine)}",
                    stt_after_turn_end_ms=[round(o.stt_after_end_ms or 0, 1) for o in mine],
                    chart=True,
                ),
                Measurement.of(f"wer_baseline_{seconds}s", "WER", base_wer, "jiwer, normalised text"),
                Measurement.of(f"wer_ours_{seconds}s", "WER", ours_wer, "jiwer, normalised text"),
                Measurement.single(
                    f"eos_to_text_ratio_{seconds}s",
                    "ratio",
                    _ratio(base_ms, ours_ms),
                    "median baseline / median ours (above 1: ours answers sooner)",
                ),
            ]
    rows.append(
        Measurement.single(
            "eos_to_text_ratio_all", "ratio", _ratio(all_base, all_ours), "median baseline / median ours, all lengths"
        )
    )
    return rows


def _ratio(base: list[float], mine: list[float]) -> float | None:
    if not base or not mine:
        return None
    ours_median = float(np.median(mine))
    return float(np.median(base)) / ours_median if ours_median > 0 else None
