"""When the worker's `AgentSession` ends a user's turn: one home for the room path's turn-taking policy.

- The session's VAD closes a speech segment after a short pause (`PAUSE_MS`); each segment is transcribed at
  once (`agent.segment_stt`), so the transcript is ready when the turn ends.
- `silence` rule: the turn ends `silence_ms` after the end of speech (livekit's endpointing `min_delay`, counted
  from the end of speech, not from the segment's end).
- `model` rule: an end-of-turn model (`agent.turn_detector`) is asked at every pause (and again during it while
  it says "not done"); "done" ends the turn right after the pause, "not done" — or a transcript that stops
  mid-sentence — keeps listening up to `max_turn_silence_ms` (at least `silence_ms`). When the
  model is missing or fails, the session falls back to the silence rule and says so in the log.

`RoomTurns` owns that state for one session: the options for `AgentSession(turn_handling=...)`, per-call
changes (`tune`), and the switch to silence when the model fails.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from livekit.agents import AgentSession, UserInputTranscribedEvent
from livekit.agents.voice.turn import EndpointingOptions, TurnHandlingOptions

from .config import Settings
from .turn_detector import AudioTurnDetector, TurnDecider

logger = logging.getLogger(__name__)

PAUSE_MS = 250
"""VAD silence that closes a speech segment in the worker, and after which the end-of-turn model is asked (as in
the local loop; livekit's audio turn detectors need at least 250 ms)."""

DEFAULT_MAX_TURN_SILENCE_MS = 3000

PREDICT_AFTER = 0.2
"""Seconds of silence after which livekit asks the turn detector (its `MIN_SILENCE_DURATION_MS`)."""

TurnRule = Literal["model", "silence"]


def endpointing(rule: TurnRule, *, silence_ms: int, max_turn_silence_ms: int) -> EndpointingOptions:
    """livekit's endpointing delays (seconds after the end of speech) for a rule."""
    if rule == "model":
        longest = max(silence_ms, max_turn_silence_ms, PAUSE_MS)
        return {"mode": "fixed", "min_delay": PAUSE_MS / 1000, "max_delay": longest / 1000}
    return {"mode": "fixed", "min_delay": silence_ms / 1000, "max_delay": silence_ms / 1000}


def configured_rule(settings: Settings) -> TurnRule:
    rule = str(getattr(settings, "turn_detection", "silence")).lower()
    return "model" if rule == "model" else "silence"


def max_turn_silence_ms(settings: Settings) -> int:
    return int(getattr(settings, "max_turn_silence_ms", DEFAULT_MAX_TURN_SILENCE_MS))


@dataclass
class TurnModelHandle:
    """A loaded end-of-turn model, as the worker uses it (built once per job process, in `prewarm`)."""

    decide: TurnDecider
    name: str
    threshold: float


def load_turn_model(settings: Settings) -> tuple[TurnModelHandle | None, str | None]:
    """The end-of-turn model when the settings ask for it: (model, None), or (None, why not) — the warning the
    worker logs and reports before it falls back to the silence rule. (None, None) with the silence rule."""
    if configured_rule(settings) != "model":
        return None, None
    try:
        from .speech.turn_model import TurnModel
    except ImportError:
        return None, "the end-of-turn model is not part of this installation; turns end on silence alone"
    try:
        model = TurnModel.load_sync(getattr(settings, "turn_model", None))
    except Exception as exc:  # TurnModelUnavailable carries the fix
        return None, f"the end-of-turn model could not be loaded ({exc}); turns end on silence alone"
    return TurnModelHandle(decide=model.probability_sync, name="smart-turn-v3.2", threshold=model.threshold), None


class RoomTurns:
    """The turn-taking policy of one worker session (see the module docstring)."""

    def __init__(
        self, settings: Settings, *, model: TurnModelHandle | None = None, unavailable: str | None = None
    ) -> None:
        self._silence_ms = settings.silence_ms
        self._max_turn_silence_ms = max_turn_silence_ms(settings)
        self._session: AgentSession | None = None
        self.detector: AudioTurnDetector | None = None
        self.warning: str | None = None
        wanted = configured_rule(settings)
        if wanted == "model" and model is None:
            self.warning = unavailable or "the end-of-turn model is not available; turns end on silence alone"
            logger.warning(self.warning)
        elif wanted == "model" and model is not None:
            self.detector = AudioTurnDetector(
                model.decide, model=model.name, threshold=model.threshold, on_failure=self._model_failed
            )

    @property
    def rule(self) -> TurnRule:
        return "model" if self.detector is not None and not self.detector.failed else "silence"

    def turn_handling(self, *, barge_in: bool) -> TurnHandlingOptions:
        return {
            "turn_detection": self.detector if self.rule == "model" else "vad",
            "endpointing": self._endpointing(self._silence_ms),
            "interruption": {"enabled": barge_in, "mode": "vad"},
            "preemptive_generation": {"enabled": False},
        }

    def attach(self, session: AgentSession) -> None:
        self._session = session
        session.on("user_input_transcribed", self._transcribed)

    def _transcribed(self, event: UserInputTranscribedEvent) -> None:
        if self.detector is not None and event.is_final:
            self.detector.heard(event.transcript)

    def tune(self, silence_ms: int) -> None:
        """A converse call's `silence_ms` for its listening (the default is restored after the call)."""
        self._update(endpointing_opts=self._endpointing(silence_ms))

    def _endpointing(self, silence_ms: int) -> EndpointingOptions:
        options = endpointing(self.rule, silence_ms=silence_ms, max_turn_silence_ms=self._max_turn_silence_ms)
        if self.detector is not None:
            # the model is asked 200 ms into the silence; it may be asked again until the long bound
            self.detector.max_wait = max(0.0, options["max_delay"] - PREDICT_AFTER)
        return options

    def _model_failed(self, exc: Exception) -> None:
        self.warning = f"the end-of-turn model failed ({exc}); turns end on silence alone"
        # the turn being decided reads max_delay after this: it waits the silence rule's delay
        self._update(turn_detection="vad", endpointing_opts=self._endpointing(self._silence_ms))

    def _update(self, **options: Any) -> None:
        if self._session is None:
            return
        try:
            self._session.update_options(**options)
        except Exception as exc:  # a session that is closing
            logger.debug("turn options not updated: %s", exc)
