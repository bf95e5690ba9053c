"""An audio end-of-turn model as a livekit-agents turn detector, so the `AgentSession` asks it at every pause.

livekit-agents drives an audio turn detector through a small stream interface (`_StreamingTurnDetector` in
`livekit.agents.voice.turn`, the one its own `inference.TurnDetector` implements): the session pushes every input
frame (`push_audio`), asks for a prediction after 200 ms of silence (`predict`), and at the VAD's end of speech
waits for it: a probability under `unlikely_threshold` means "not done", and the turn then ends only after the
endpointing `max_delay`; otherwise after `min_delay` (see `agent.turn_taking`).

`AudioTurnDetector` adapts any `TurnDecider` — a function from the last seconds of the user's audio (16 kHz mono
float32) to the probability that the turn is complete — to that interface. The decision runs in a worker thread.
When it fails, `on_failure` is told once (the worker then switches the session to the silence rule) and the
prediction answers "not done", so that turn waits the endpointing `max_delay` the failure handler set.
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

logger = logging.getLogger(__name__)

TurnDecider = Callable[[np.ndarray], float]
"""16 kHz mono float32 audio ending now → probability (0..1) that the user has finished the turn."""

SAMPLE_RATE = 16000
MAX_SECONDS = 8.0  # what audio end-of-turn models such as Smart Turn look at
PREDICTION_TIMEOUT = 1.0


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
        self._inference: asyncio.Future[TurnDetectionEvent] | None = None
        self._job: asyncio.Future[float] | None = None

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
        return PREDICTION_TIMEOUT

    async def unlikely_threshold(self, language: object) -> float | None:
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
        self.cancel_inference()

    def end_input(self) -> None:
        return None

    # --- predictions --------------------------------------------------------------------------------------------
    def predict(self) -> asyncio.Future[TurnDetectionEvent]:
        self.cancel_inference()
        loop = asyncio.get_running_loop()
        result: asyncio.Future[TurnDetectionEvent] = loop.create_future()
        audio = self._audio()
        asked = time.time()
        started = time.perf_counter()
        job = loop.run_in_executor(None, self._detector._decide, audio)

        def done(job: asyncio.Future[float]) -> None:
            if result.done():
                return
            if job.cancelled():
                result.cancel()
                return
            exc = job.exception()
            if exc is None:
                probability = float(job.result())
            else:
                self._detector._failed(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
                probability = 0.0  # "not done": the turn waits the (silence rule's) max_delay
            result.set_result(
                TurnDetectionEvent(
                    type="eot_prediction",
                    end_of_turn_probability=probability,
                    last_speaking_time=asked,
                    detection_delay=time.time() - asked,
                    inference_duration=time.perf_counter() - started,
                )
            )

        job.add_done_callback(done)
        self._inference, self._job = result, job
        return result

    def cancel_inference(self, *, timed_out: bool = False) -> None:
        if self._inference is not None and not self._inference.done():
            self._inference.cancel()
        if self._job is not None and not self._job.done():
            self._job.cancel()  # a decision already running in its thread finishes and is ignored
        self._inference = self._job = None

    async def aclose(self) -> None:
        self.cancel_inference()
        with contextlib.suppress(Exception):
            self._chunks.clear()

    def _audio(self) -> np.ndarray:
        if not self._chunks:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0
