"""Listening for the user's reply: microphone → VAD → endpointing → STT.

The listener runs from the moment the microphone opens (while the assistant may still be speaking) until the
user's turn has ended and been transcribed. It records the microphone, feeds the shared VAD (only its per-window
speech probabilities are used, so the shared VAD object is never reconfigured), lets an `Endpointer` decide when
speech starts and the turn ends, and transcribes the speech with a little pre-roll so the first syllable is kept.

Early transcription: when the user pauses, the speech so far is transcribed at once. If the user does not resume
and the turn ends, that transcript is the answer and the user waits only for the end of the turn; if they go
on, it is discarded. One early transcription runs at a time; a pause that comes while one runs is remembered (the
newest only) and transcribed as soon as the running one finishes. If STT fails, the reply is saved as a WAV file
and `TranscriptionFailed` names it; if the microphone dies in the middle of a reply, what was heard so far is
saved and the device error names the file (see `recording` for where, and for how long such files are kept).

End-of-turn model: with a `turn_model` (a future that resolves to a loaded `agent.speech.turn_model.TurnModel`,
or to None when it could not load), every pause also asks the model whether the user is done, on the turn's audio
from its onset (with pre-roll) to now, and again every `endpointing.MODEL_REASK` seconds of the same silence while
it says "not done"; the `Endpointer` ends the turn on "done" — unless the early transcript of that speech stops
mid-sentence (`agent.speech.turn_text`), which only the long silence bound then ends. A model that fails falls
back to the silence rule for the turn and is reported through `model_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from livekit.agents import vad as lk_vad

from agent.speech.audio import resample_int16
from agent.speech.turn_model import SAMPLE_RATE as MODEL_RATE
from agent.speech.turn_model import TurnModel
from agent.speech.turn_text import ends_open
from mcp_bridge.converse_types import ProviderError, TranscriptionFailed, VoiceError

from .endpointing import MODEL_REASK, EndpointConfig, Endpointer, Event, Pause, Resumed, SpeechStarted, TurnEnded
from .microphone import Microphone
from .recording import Recording, save_failed_reply
from .transcriber import SttFailure, Transcriber, Transcript

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Heard:
    """What one listening turn produced. Wall times are `time.perf_counter()` values."""

    heard_speech: bool
    text: str
    ended_by: Literal["silence", "model", "max_duration"]
    barge_in: bool
    """Speech started while the assistant was still speaking."""
    listen_started: float | None
    speech_ended: float | None
    turn_ended: float
    result_ready: float
    stt_ms: float | None
    early_transcript: bool
    audio_seconds: float
    model_decisions: list[tuple[float, float]] = field(default_factory=list)
    """(probability, milliseconds) of every end-of-turn model decision in this turn."""


@dataclass
class _Early:
    speech_end: float
    task: asyncio.Task[Transcript]


class Listener:
    def __init__(
        self,
        mic: Microphone,
        vad: lk_vad.VAD,
        transcriber: Transcriber,
        config: EndpointConfig,
        *,
        recordings_dir: Path,
        keep_failed_audio_days: float = 7.0,
        on_speech_started: Callable[[SpeechStarted], None] | None = None,
        early_transcription: bool = True,
        turn_model: asyncio.Future[TurnModel | None] | None = None,
        is_echo: Callable[[], bool] | None = None,
        preroll: float = 0.4,
        tail: float = 0.25,
    ) -> None:
        self._mic = mic
        self._vad = vad
        self._transcriber = transcriber
        self._endpointer = Endpointer(config, is_echo=is_echo)
        self._recordings_dir = recordings_dir
        self._keep_days = keep_failed_audio_days
        self._on_speech_started = on_speech_started
        self._early_enabled = early_transcription
        self._preroll = preroll
        self._tail = min(tail, config.pause)
        self._recording: Recording | None = None
        self._early: _Early | None = None
        self._pending_early: float | None = None
        self._turn_model = turn_model if config.turn_model else None
        self._model_tasks: set[asyncio.Task[None]] = set()
        self._model_decisions: list[tuple[float, float]] = []
        self.model_error: str | None = None
        """Why the end-of-turn model failed in this turn (the silence rule took over), if it did."""
        self._ended = asyncio.Event()
        self._listen_started_wall: float | None = None
        self._barge_in = False
        self.speech_started = asyncio.Event()

    # --- control from the transport -----------------------------------------------------------------------------

    def start_listening(self) -> None:
        """The assistant finished speaking: from now on the listening window (max/min seconds) runs."""
        if self._endpointer.listen_start is None:
            self._endpointer.start_listening(self._mic.audio_time)
            self._listen_started_wall = time.perf_counter()

    @property
    def turn_ended(self) -> asyncio.Event:
        """Set as soon as the turn is over (before transcription), e.g. to play the "stopped listening" cue."""
        return self._ended

    # --- the turn -----------------------------------------------------------------------------------------------

    async def run(self) -> Heard:
        vad_stream = self._vad.stream()
        feeder = asyncio.create_task(self._feed(vad_stream), name="voice-mcp-mic-feed")
        detector = asyncio.create_task(self._detect(vad_stream), name="voice-mcp-vad")
        ended = asyncio.create_task(self._ended.wait())
        try:
            done, _ = await asyncio.wait({feeder, detector, ended}, return_when=asyncio.FIRST_COMPLETED)
            for task in (feeder, detector):
                if task in done and task.exception() is not None:
                    raise await self._salvage_heard(_as_voice_error(task.exception()))
            if ended not in done:
                raise ProviderError("Voice activity detection stopped unexpectedly.", "Try again.")
        finally:
            tasks = (feeder, detector, ended, *self._model_tasks)
            for task in tasks:
                task.cancel()
            _, stuck = await asyncio.wait(tasks, timeout=5.0)  # bounded: cleanup must never hang the exchange
            if stuck:
                log.warning("listener tasks did not stop: %s", [t.get_name() for t in stuck])
            with contextlib.suppress(Exception):
                await vad_stream.aclose()
        return await self._finish()

    async def _feed(self, vad_stream: lk_vad.VADStream) -> None:
        while not self._ended.is_set():
            mic = await self._mic.read()
            if self._recording is None:
                self._recording = Recording(mic.frame.sample_rate)
            self._recording.append(mic)
            vad_stream.push_frame(mic.frame)
            self._handle(self._endpointer.tick(mic.time + mic.frame.duration))

    async def _detect(self, vad_stream: lk_vad.VADStream) -> None:
        last = 0.0
        async for event in vad_stream:
            if event.type != lk_vad.VADEventType.INFERENCE_DONE:
                continue
            window = max(1e-3, event.timestamp - last)
            last = event.timestamp
            self._handle(self._endpointer.observe(event.timestamp, event.probability, window))

    def _handle(self, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                log.debug("speech started at %.2f s (during playback: %s)", event.onset, event.during_playback)
                if self._recording is not None:
                    self._recording.pinned_from = event.onset - self._preroll
                if self._listen_started_wall is None and self._recording is not None:
                    self._listen_started_wall = self._recording.wall_at(event.onset)
                self._barge_in = event.during_playback
                self.speech_started.set()
                if self._on_speech_started is not None:
                    self._on_speech_started(event)
            elif isinstance(event, Pause):
                self._start_early(event.speech_end)
                self._ask_model(event.speech_end)
            elif isinstance(event, Resumed):
                log.debug("speech resumed at %.2f s", event.at)
            elif isinstance(event, TurnEnded):
                log.debug("turn ended at %.2f s by %s", event.at, event.reason)
                self._ended.set()

    def _speech_clip(self, speech_end: float) -> np.ndarray:
        assert self._recording is not None and self._endpointer.onset is not None
        start = max(0.0, self._endpointer.onset - self._preroll)
        end = min(speech_end + self._tail, self._recording.end_time)
        return self._recording.clip(start, end)

    def _start_early(self, speech_end: float) -> None:
        if not self._early_enabled or self._recording is None:
            return
        if self._early is not None and not self._early.task.done():
            # one early transcription at a time (the CPU is shared with the user's next words); the newest pause
            # waits for the running one
            self._pending_early = speech_end
            return
        self._pending_early = None
        samples = self._speech_clip(speech_end)
        rate = self._recording.sample_rate
        log.debug("early transcription of the speech up to %.2f s", speech_end)
        task = asyncio.create_task(self._transcriber.transcribe(samples, rate), name="voice-mcp-early-stt")
        task.add_done_callback(self._early_done)
        self._early = _Early(speech_end, task)

    def _early_done(self, task: asyncio.Task[Transcript]) -> None:
        _consume_exception(task)
        log.debug("early transcription done")
        pending, self._pending_early = self._pending_early, None
        if pending is not None and pending == self._endpointer.speech_end and not task.cancelled():
            self._start_early(pending)  # still the latest pause (the user has not resumed since)

    def _ask_model(self, speech_end: float) -> None:
        if self._turn_model is None or self._recording is None or self._endpointer.onset is None:
            return
        task = asyncio.create_task(self._decide(speech_end), name="voice-mcp-turn")
        self._model_tasks.add(task)
        task.add_done_callback(self._model_tasks.discard)

    def _still_paused_after(self, speech_end: float) -> bool:
        ep = self._endpointer
        return ep.ended is None and ep.speech_end == speech_end

    async def _decide(self, speech_end: float) -> None:
        """Ask the model about the pause after `speech_end`, again every `MODEL_REASK` seconds of silence while it
        says "not done", until it says "done", the user resumes or the turn ends. A "done" on speech whose transcript
        stops mid-sentence counts as "not done" (and is not asked again: only the long bound ends that pause)."""
        assert self._turn_model is not None and self._recording is not None and self._endpointer.onset is not None
        model = await self._turn_model
        if model is None:
            self._handle(self._endpointer.model_failed(self._audio_end))
            return
        rate = self._recording.sample_rate
        start = max(0.0, self._endpointer.onset - self._preroll)
        bound = self._endpointer.config.max_silence
        while self._still_paused_after(speech_end):
            clip = self._recording.clip(start, self._recording.end_time)  # the silence so far is part of the input
            started = time.perf_counter()
            try:
                probability = await model.end_of_turn_probability(resample_int16(clip, rate, MODEL_RATE))
            except Exception as exc:
                log.warning("the end-of-turn model failed (%s); ending this turn by silence", exc)
                self.model_error = str(exc) or type(exc).__name__
                self._handle(self._endpointer.model_failed(self._audio_end))
                return
            took = (time.perf_counter() - started) * 1000
            self._model_decisions.append((probability, took))
            done = probability >= model.threshold
            log.debug("end of turn: p=%.3f (%s) in %.0f ms", probability, "done" if done else "not done", took)
            if done:
                waited = time.perf_counter()
                open_ended = await self._speech_ends_open(speech_end)
                log.debug("transcript checked in %.0f ms", (time.perf_counter() - waited) * 1000)
                if open_ended:
                    log.debug("the transcript stops mid-sentence: waiting for more")
                    return
            self._handle(self._endpointer.model_decided(self._audio_end, speech_end, done))
            if done:
                return
            silent_for = self._audio_end - speech_end
            ask_at = (silent_for // MODEL_REASK + 1) * MODEL_REASK
            if ask_at >= bound:
                return
            await asyncio.sleep(ask_at - silent_for)

    async def _speech_ends_open(self, speech_end: float) -> bool:
        """Whether the early transcript of the speech up to `speech_end` stops mid-sentence (False when there is
        none: early transcription off, or it failed)."""
        while self._early_enabled and self._still_paused_after(speech_end):
            early = self._early
            if early is not None and early.speech_end == speech_end:
                try:
                    transcript = await asyncio.shield(early.task)
                except (SttFailure, asyncio.CancelledError):
                    if _being_cancelled():
                        raise
                    return False
                log.debug("transcript before the pause: %r", transcript.text)
                return ends_open(transcript.text, self._transcriber.language)
            if self._pending_early != speech_end or early is None:
                return False
            await asyncio.wait({early.task})  # this pause's transcription is queued behind an older one
        return False

    @property
    def _audio_end(self) -> float:
        return self._recording.end_time if self._recording is not None else 0.0

    async def _finish(self) -> Heard:
        ep = self._endpointer
        assert ep.ended is not None
        turn_end_wall = time.perf_counter()
        recording = self._recording
        rate = recording.sample_rate if recording is not None else 16000
        if not ep.heard_speech or recording is None or ep.speech_end is None:
            self._discard_early()
            return Heard(
                heard_speech=False, text="", ended_by=ep.ended.reason, barge_in=False,
                listen_started=self._listen_started_wall, speech_ended=None, turn_ended=turn_end_wall,
                result_ready=time.perf_counter(), stt_ms=None, early_transcript=False, audio_seconds=0.0,
            )
        speech_end = ep.speech_end
        speech_end_wall = recording.wall_at(speech_end)
        samples = self._speech_clip(speech_end)
        transcript: Transcript | None = None
        early_used = False
        early = self._early
        if (
            early is not None and early.speech_end != speech_end and self._pending_early == speech_end
            and not early.task.done()
        ):
            # the final pause is queued behind an older early run whose thread cannot be stopped: let it finish
            # instead of running two transcriptions at once, then transcribe the whole reply below
            self._pending_early = None
            with contextlib.suppress(BaseException):
                await early.task
        if early is not None and early.speech_end == speech_end:
            try:
                transcript = await early.task
                early_used = True
            except (SttFailure, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and _being_cancelled():
                    raise  # this call was cancelled, not only the early run: stop, do not transcribe again
                log.info("early transcription failed (%s); transcribing again", exc)
        else:
            self._discard_early()
        if transcript is None:
            try:
                transcript = await self._transcriber.transcribe(samples, rate)
            except SttFailure as exc:
                failed = TranscriptionFailed(
                    "Your reply was recorded but could not be transcribed.",
                    f"{exc}. Check the STT provider (VOICE_MCP_STT).",
                )
                raise await self._salvage(failed, samples, rate) from None
        return Heard(
            heard_speech=True, text=transcript.text, ended_by=ep.ended.reason, barge_in=self._barge_in,
            listen_started=self._listen_started_wall, speech_ended=speech_end_wall, turn_ended=turn_end_wall,
            result_ready=time.perf_counter(), stt_ms=transcript.stt_ms, early_transcript=early_used,
            audio_seconds=transcript.audio_seconds, model_decisions=list(self._model_decisions),
        )

    async def _salvage_heard(self, error: BaseException) -> BaseException:
        """`error`, naming the file that keeps what the user had said so far (if they had started speaking)."""
        recording, onset = self._recording, self._endpointer.onset
        if not isinstance(error, VoiceError) or recording is None or onset is None:
            return error
        samples = recording.clip(max(0.0, onset - self._preroll), recording.end_time)
        return await self._salvage(error, samples, recording.sample_rate, partial=True)

    async def _salvage(
        self, error: VoiceError, samples: np.ndarray, rate: int, *, partial: bool = False
    ) -> VoiceError:
        what = "What you had said so far" if partial else "The reply"
        try:
            path = await asyncio.to_thread(
                save_failed_reply, samples, rate, self._recordings_dir, self._keep_days
            )
        except OSError as exc:
            return error.with_saved_reply(None, f"{what} could not be saved either ({exc})")
        if path is None:
            return error.with_saved_reply(None, f"{what} was not kept (VOICE_MCP_KEEP_FAILED_AUDIO_DAYS=0)")
        return error.with_saved_reply(path, f"{what} was saved to {path}")

    def _discard_early(self) -> None:
        self._pending_early = None
        if self._early is not None and not self._early.task.done():
            self._early.task.cancel()
        self._early = None


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _consume_exception(task: asyncio.Task[Transcript]) -> None:
    if not task.cancelled():
        task.exception()


def _as_voice_error(exc: BaseException | None) -> BaseException:
    if exc is None:
        return ProviderError("Listening failed.", "Try again.")
    if isinstance(exc, VoiceError):
        return exc
    log.warning("listening failed: %r", exc)
    return ProviderError(f"Listening failed: {exc}.", "Try again; if it persists, run with VOICE_MCP_DEBUG=1.")
