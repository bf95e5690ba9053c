"""An audio end-of-turn model as a livekit-agents turn detector, so the `AgentSession` asks it at every pause.

livekit-agents drives an audio turn detector through a small stream interface (`_StreamingTurnDetector` in
`livekit.agents.voice.turn`, the one its own `inference.TurnDetector` implements): the session pushes every input
frame (`push_audio`), asks for a prediction after 200 ms of silence (`predict`), and at the VAD's end of speech
waits for it: a probability under `unlikely_threshold` means "not done", and the turn then ends only after the
endpointing `max_delay`; otherwise after `min_delay` (see `agent.turn_taking`).

`AudioTurnDetector` adapts any `TurnDecider` — a function from the last seconds of the user's audio (16 kHz mono
float32) to the probability that the turn is complete — to that interface. The decision runs in a worker thread.
As in the local loop, a "not done" is asked again every `REASK` seconds of the same silence (the model grows surer
with the silence it hears), until "done" or `max_wait` seconds after the question: one prediction covers the
whole pause, and livekit waits for it (`prediction_timeout` is above `max_wait`: a slow model on a busy machine
must not count as an answer, livekit would then end the turn at `min_delay`). A "done" on speech whose transcript
(`heard`, the session's final transcripts) stops mid-sentence (`agent.speech.turn_text`) does not end the turn:
`unlikely_threshold` is then above any probability, and only `max_delay` ends it. When the decider fails,
`on_failure` is told once (the worker then switches the session to the silence rule) and the prediction answers
"not done", so that turn waits the endpointing `max_delay` the failure handler set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import numpy as np
from livekit import rtc
from livekit.agents import APIConnectOptions
from livekit.agents.types import DEFAULT_API_CONNECT_OPTIONS
from livekit.agents.voice.turn import TurnDetectionEvent

from .speech.audio import resample_int16
from .speech.turn_text import ends_open

logger = logging.getLogger(__name__)

TurnDecider = Callable[[np.ndarray], float]
"""16 kHz mono float32 audio ending now → probability (0..1) that the user has finished the turn."""

SAMPLE_RATE = 16000
MAX_SECONDS = 8.0  # what audio end-of-turn models such as Smart Turn look at
REASK = 0.5
"""Seconds between two decisions on the same pause while the model says "not done" (as the local loop's
`mcp_bridge.local.endpointing.MODEL_REASK`)."""
DECISION_SLACK = 1.0
"""Seconds livekit waits for a prediction beyond `max_wait` (a decision still running at the deadline)."""
OPEN_TEXT_THRESHOLD = 1.01
"""`unlikely_threshold` when the transcript stops mid-sentence: no probability reaches it."""


class AudioTurnDetector:
    """A livekit-agents streaming turn detector over a `TurnDecider` (one stream per session)."""

    def __init__(
        self,
        decide: TurnDecider,
        *,
        model: str,
        threshold: float = 0.5,
        on_failure: Callable[[Exception], None] | None = None,
    ) -> None:
        self._decide = decide
        self._model = model
        self.threshold = threshold
        self.on_failure = on_failure
        self.failed = False
        self.max_wait = 3.0
        """Seconds after the question during which a "not done" is asked again (the turn's long bound)."""
        self._last_text: str | None = None
        self.on_decided: Callable[[float], None] | None = None
        """Told the probability of each pause's last decision (the worker's stage timings)."""

    def heard(self, text: str) -> None:
        """A final transcript of the user's current turn (the latest ends where the user paused)."""
        if text.strip():
            self._last_text = text

    def forget_text(self) -> None:
        self._last_text = None

    def text_ends_open(self, language: object) -> bool:
        return self._last_text is not None and ends_open(self._last_text, str(language) if language else None)

    @property
    def model(self) -> str:
        return self._model

    @property
    def provider(self) -> str:
        return "voice-mcp"

    def stream(self, *, conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS) -> AudioTurnStream:
        return AudioTurnStream(self)

    def _failed(self, exc: Exception) -> None:
        if self.failed:
            return
        self.failed = True
        logger.warning("the end-of-turn model failed (%s); turns end on silence alone from now on", exc)
        if self.on_failure is not None:
            self.on_failure(exc)


class AudioTurnStream:
    """Keeps the last `MAX_SECONDS` of the user's audio and runs the decider on it when asked."""

    def __init__(self, detector: AudioTurnDetector) -> None:
        self._detector = detector
        self._chunks: list[np.ndarray] = []
        self._samples = 0
        self._inference: asyncio.Task[TurnDetectionEvent] | None = None

    # --- what livekit reads -----------------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return self._detector.model

    @property
    def provider(self) -> str:
        return self._detector.provider

    @property
    def is_fallback(self) -> bool:
        return False

    @property
    def prediction_timeout(self) -> float:
        return self._detector.max_wait + DECISION_SLACK

    async def unlikely_threshold(self, language: object) -> float | None:
        if self._detector.text_ends_open(language):
            logger.debug("the transcript stops mid-sentence (%r): waiting for more", self._detector._last_text)
            return OPEN_TEXT_THRESHOLD
        return self._detector.threshold

    async def backchannel_threshold(self, language: object) -> float | None:
        return None

    async def supports_language(self, language: object) -> bool:
        return not self._detector.failed

    # --- audio --------------------------------------------------------------------------------------------------
    def push_audio(self, frame: rtc.AudioFrame) -> None:
        samples = np.frombuffer(frame.data, dtype=np.int16)
        if frame.num_channels > 1:
            samples = samples[:: frame.num_channels]
        if frame.sample_rate != SAMPLE_RATE:
            samples = resample_int16(samples, frame.sample_rate, SAMPLE_RATE)
        self._chunks.append(samples)
        self._samples += samples.size
        limit = int(MAX_SECONDS * SAMPLE_RATE)
        while self._chunks and self._samples - self._chunks[0].size >= limit:
            self._samples -= self._chunks.pop(0).size

    def flush(self, reason: str | None = None) -> None:
        """The turn was committed: the next turn starts from fresh audio."""
        self._chunks.clear()
        self._samples = 0
        self._detector.forget_text()
        self.cancel_inference()

    def end_input(self) -> None:
        return None

    # --- predictions --------------------------------------------------------------------------------------------
    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        self.cancel_inference()
        self._inference = asyncio.get_running_loop().create_task(self._decide(), name="voice-mcp.turn-decision")
        return self._inference

    async def _decide(self) -> TurnDetectionEvent:
        """Decide now, and again every `REASK` seconds while "not done", until `max_wait` after the question."""
        loop = asyncio.get_running_loop()
        asked = time.time()
        started = time.perf_counter()
        deadline = started + self._detector.max_wait
        probability = 0.0
        tries = 0
        while True:
            tries += 1
            try:
                probability = float(await loop.run_in_executor(None, self._detector._decide, self._audio()))
            except asyncio.CancelledError:
                raise  # the user resumed: a decision already running in its thread finishes and is ignored
            except Exception as exc:
                self._detector._failed(exc)
                probability = 0.0  # "not done": the turn waits the (silence rule's) max_delay
                break
            if probability >= self._detector.threshold:
                break
            ask_at = started + tries * REASK
            if ask_at >= deadline:
                break
            await asyncio.sleep(max(0.0, ask_at - time.perf_counter()))
        logger.debug("end of turn: p=%.3f after %d decision(s)", probability, tries)
        if self._detector.on_decided is not None:
            self._detector.on_decided(probability)
        return TurnDetectionEvent(
            type="eot_prediction",
            end_of_turn_probability=probability,
            last_speaking_time=asked,
            detection_delay=time.time() - asked,
            inference_duration=time.perf_counter() - started,
        )

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        if self._inference is not None and not self._inference.done():
            self._inference.cancel()
        self._inference = None

    async def aclose(self) -> None:
        self.cancel_inference()
        with contextlib.suppress(Exception):
            self._chunks.clear()

    def _audio(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0
