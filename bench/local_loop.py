"""(a) end of the user's speech → converse returns, and (b) converse called → first TTS audio, on the local loop.

A real `LocalTransport` (embedded models, WebRTC echo canceller, Silero VAD, early transcription, the Smart Turn
end-of-turn model; cues on, as users have them: the product defaults) runs against the private PulseAudio: the
assistant's voice goes to the virtual speaker, which a `Tap` records with arrival times; the user's reply,
synthesised by Piper, is played into the virtual microphone one second after the transport reports `listening`.

- (a) `eos_to_return_local_Ns`: converse returned − (playback start + offset of the reply's last voiced sample).
  Playback start is when `paplay` was started; `virtual_mic_path` is how long its sound then takes to reach the
  microphone (part of (a), a cost of the virtual device, not of voice-mcp).
  `eos_to_result_transport_Ns` is the transport's own `end_of_speech_to_result_ms` (from the moment the
  microphone frame that ended speech arrived to the transcript), `return_after_result_Ns` what converse still did
  after the transcript was ready (the "done" cue and the devices are left to the background now).
  `ended_by_model_Ns` counts the turns the model ended (the rest waited for the 3 s bound).
- (b) `first_audio_local_speaker`: converse called → first loud sample on the speaker monitor;
  `first_audio_local_transport`: the transport's own `first_audio_ms` (first frame handed to PortAudio).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from agent.speech import build_vad
from mcp_bridge.converse_types import ConverseRequest, ConverseResult, ListenOptions, Stage
from mcp_bridge.local import LocalTransport

from .harness import Measurement
from .settings import bench_settings
from .speech import Reply, Speech, wer
from .virtual_audio import Tap, VirtualAudioSession

log = logging.getLogger(__name__)

MESSAGE = "Which file should I open first? The configuration or the tests?"
REPLY_DELAY = 1.0
"""Seconds after `listening` before the user answers (the cue has played by then)."""
BOUND = 180.0


class _Progress:
    def __init__(self) -> None:
        self.listening = asyncio.Event()
        self.result_ready: float | None = None
        """perf_counter when the transport reported `done` (the result is ready; devices still closing)."""

    async def __call__(self, stage: Stage, message: str) -> None:
        if stage == Stage.LISTENING:
            self.listening.set()
        elif stage == Stage.DONE:
            self.result_ready = time.perf_counter()


async def _exchange(
    transport: LocalTransport, audio: VirtualAudioSession, tap: Tap, reply: Reply
) -> tuple[ConverseResult, dict[str, float | None]]:
    progress = _Progress()
    request = ConverseRequest(message=MESSAGE, listen=ListenOptions(max_seconds=60))
    called = time.perf_counter()
    task = asyncio.create_task(transport.converse(request, progress))
    try:
        await asyncio.wait_for(progress.listening.wait(), BOUND)
        await asyncio.sleep(REPLY_DELAY)
        played = audio.play_into_mic(reply.pcm)
        result = await asyncio.wait_for(task, BOUND)
    finally:
        if not task.done():
            task.cancel()
    returned = time.perf_counter()
    speaker = tap.first_loud(called)
    result_ready = progress.result_ready if progress.result_ready is not None else returned
    return result, {
        "eos_to_return": (returned - (played + reply.voiced_end)) * 1000,
        "return_after_result": (returned - result_ready) * 1000,
        "first_audio_speaker": (speaker - called) * 1000 if speaker is not None else None,
    }


async def _first_sentence(speech: Speech, rounds: int) -> Measurement:
    """How much of (b) is Piper: synthesis of the message's first sentence until its first audio chunk."""
    first = MESSAGE.split("?")[0] + "?"
    took: list[float] = []
    for _ in range(rounds):
        started = time.perf_counter()
        async with speech.tts.synthesize(first) as stream:
            async for _audio in stream:
                took.append((time.perf_counter() - started) * 1000)
                break
    return Measurement.of("tts_first_chunk_local", "ms", took, f"Piper: {first!r} → its first audio chunk")


async def run_local(speech: Speech, *, iterations: int, out: Path) -> list[Measurement]:
    rows: list[Measurement] = []
    vad = build_vad(bench_settings())
    with VirtualAudioSession() as audio, TemporaryDirectory(prefix="vmcp-bench-local-") as tmp:
        path_ms = await audio.calibrate_mic_path(rounds=max(3, iterations))
        rows.append(
            Measurement.of(
                "virtual_mic_path",
                "ms",
                path_ms,
                "paplay started → first loud sample at the virtual microphone (included in eos_to_return_local)",
            )
        )
        rows.append(await _first_sentence(speech, max(3, iterations)))
        settings = bench_settings(data_dir=Path(tmp))
        transport = LocalTransport(settings, stt=speech.stt, tts=speech.tts, vad=vad)
        tap = Tap("vspeaker.monitor").start()
        first_speaker: list[float | None] = []
        first_transport: list[float | None] = []
        try:
            await asyncio.sleep(1.0)
            for seconds in (1, 3, 8):
                replies = await speech.replies(seconds, iterations)
                eos: list[float | None] = []
                own: list[float | None] = []
                after: list[float | None] = []
                stt: list[float | None] = []
                errors: list[float] = []
                by_model: list[float] = []
                for reply in replies:
                    tap.clear()
                    result, measured = await _exchange(transport, audio, tap, reply)
                    if not result.heard_speech:
                        log.warning("no speech heard for %r", reply.text)
                    eos.append(measured["eos_to_return"] if result.heard_speech else None)
                    own.append(result.timings.end_of_speech_to_result_ms)
                    after.append(measured["return_after_result"])
                    stt.append(result.timings.stt_ms)
                    first_speaker.append(measured["first_audio_speaker"])
                    first_transport.append(result.timings.first_audio_ms)
                    errors.append(wer(reply.text, result.text))
                    by_model.append(1.0 if result.ended_by == "model" else 0.0)
                voiced = sum(r.voiced_seconds for r in replies) / len(replies)
                rows += [
                    Measurement.of(
                        f"eos_to_return_local_{seconds}s",
                        "ms",
                        eos,
                        f"(a) last voiced sample played → converse returned; reply voiced {voiced:.1f} s, "
                        f"turn detection {settings.turn_detection}",
                        chart=True,
                    ),
                    Measurement.of(
                        f"eos_to_result_transport_{seconds}s",
                        "ms",
                        own,
                        "the transport's end_of_speech_to_result_ms",
                        chart=True,
                    ),
                    Measurement.single(
                        f"ended_by_model_{seconds}s",
                        "ratio",
                        sum(by_model) / len(by_model) if by_model else None,
                        "share of turns the end-of-turn model ended (the others waited for the long bound)",
                    ),
                    Measurement.of(
                        f"return_after_result_{seconds}s",
                        "ms",
                        after,
                        "transcript ready → converse returned (the done cue and device closing run after it)",
                    ),
                    Measurement.of(f"stt_local_{seconds}s", "ms", stt, "the transport's stt_ms (early or final)"),
                    Measurement.of(f"wer_local_{seconds}s", "WER", errors, "jiwer, normalised text"),
                ]
        finally:
            tap.stop()
            await transport.aclose()
    rows += [
        Measurement.of(
            "first_audio_local_speaker",
            "ms",
            first_speaker,
            f"(b) converse called → first loud sample on the virtual speaker; message {MESSAGE!r}",
            chart=True,
        ),
        Measurement.of(
            "first_audio_local_transport",
            "ms",
            first_transport,
            "(b) the transport's first_audio_ms (first frame handed to PortAudio)",
            chart=True,
        ),
    ]
    return rows
