"""Deciding when the user's turn starts and ends, from voice-activity probabilities. Pure logic, no audio.

Times are seconds on the microphone's audio clock. The listener feeds one `observe(t, p)` per VAD window
(probability `p` that the window ending at `t` is speech) and `tick(t)` as audio arrives; each returns what changed.

Rules:
- Before `start_listening(t)` the assistant is still speaking: speech must be a little more certain and longer to
  count (residual echo must not interrupt the assistant), and `is_echo()` (when given) must say it is not the
  assistant's own voice — otherwise the run starts over. Speech found then is a barge-in, and listening starts at
  its onset.
- Speech starts after `min_speech` seconds of windows at or above the activation threshold; its onset is the
  first of those windows.
- Once speech started, a window above the deactivation threshold is speech; anything else is silence.
- After `pause` seconds of silence a `Pause` is reported (a moment to transcribe early); speech after it is
  reported as `Resumed`.
- Silence rule (`turn_model` off): the turn ends after `silence` seconds of silence.
- Model rule (`turn_model` on): at each `Pause` the listener asks the end-of-turn model (again every
  `MODEL_REASK` seconds of silence while it says "not done") and reports its answer with `model_decided`; "done"
  ends the turn at once (if the user has not resumed since), "not done" leaves it to `max_silence` seconds of
  silence (the long bound). The listener turns a "done" into "not done" when the transcript of the speech so far
  stops mid-sentence (`agent.speech.turn_text`). If the model fails, `model_failed` falls back to the silence rule
  for the rest of the turn.
- Either way not before `min_listen` seconds of listening, and never later than `max_listen` seconds after listening
  started (speech or not). With silence detection off only `max_listen` ends it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from agent.speech.vad import activation_threshold, deactivation_threshold  # the one map, as for the worker's VAD


@dataclass(frozen=True)
class EndpointConfig:
    max_listen: float
    min_listen: float = 0.0
    silence: float = 1.0
    silence_detection: bool = True
    activation: float = 0.5
    deactivation: float = 0.35
    min_speech: float = 0.1
    pause: float = 0.3
    barge_in_min_speech: float = 0.25
    barge_in_margin: float = 0.1
    turn_model: bool = False
    max_silence: float = 3.0

    @classmethod
    def from_options(
        cls, *, max_seconds: float, min_seconds: float, silence_ms: int, vad_aggressiveness: int,
        silence_detection: bool, turn_model: bool = False, max_turn_silence_ms: int = 3000,
    ) -> EndpointConfig:
        """With `turn_model`, the model is asked after MODEL_PAUSE of silence and the long bound is the larger of
        `silence_ms` and `max_turn_silence_ms` (a caller's longer silence is honoured as a longer bound)."""
        activation = activation_threshold(vad_aggressiveness)
        silence = silence_ms / 1000
        return cls(
            max_listen=max_seconds,
            min_listen=min(min_seconds, max_seconds),
            silence=silence,
            silence_detection=silence_detection,
            activation=activation,
            deactivation=deactivation_threshold(activation),
            pause=MODEL_PAUSE if turn_model else max(0.2, min(0.5, silence / 3)),
            turn_model=turn_model,
            max_silence=max(silence, max_turn_silence_ms / 1000),
        )


MODEL_PAUSE = 0.25
"""Seconds of silence before the end-of-turn model is asked (and early transcription starts)."""

MODEL_REASK = 0.5
"""Seconds of silence between two questions to the model while it says "not done" (until the long bound). It grows
surer with the silence it hears: a whole reply with a thinking pause inside scored 0.04–0.4 with 0.1–0.25 s of
trailing silence and 0.5–0.9 with 0.5–1 s, while a phrase ending in "um" stays near 0.01 however long the
silence."""


@dataclass(frozen=True)
class SpeechStarted:
    onset: float
    during_playback: bool


@dataclass(frozen=True)
class Pause:
    speech_end: float


@dataclass(frozen=True)
class Resumed:
    at: float


@dataclass(frozen=True)
class TurnEnded:
    reason: Literal["silence", "model", "max_duration"]
    at: float


Event = SpeechStarted | Pause | Resumed | TurnEnded


class Endpointer:
    def __init__(self, config: EndpointConfig, *, is_echo: Callable[[], bool] | None = None) -> None:
        self.config = config
        self._is_echo = is_echo
        self.listen_start: float | None = None
        self.onset: float | None = None
        self.speech_end: float | None = None
        """End of the last speech window (audio time)."""
        self.ended: TurnEnded | None = None
        self._run_start: float | None = None
        self._run_length = 0.0
        self._paused = False
        self._last_t: float | None = None
        self._use_model = config.turn_model
        self._model_done_at: float | None = None
        """speech_end the model judged final (the turn ends once min_listen allows)."""

    @property
    def heard_speech(self) -> bool:
        return self.onset is not None

    def start_listening(self, t: float) -> None:
        if self.listen_start is None:
            self.listen_start = t

    def observe(self, t: float, probability: float, window: float) -> list[Event]:
        if self.ended is not None:
            return []
        events: list[Event] = []
        self._last_t = t
        cfg = self.config
        if self.onset is None:
            playback = self.listen_start is None
            threshold = min(0.95, cfg.activation + cfg.barge_in_margin) if playback else cfg.activation
            needed = cfg.barge_in_min_speech if playback else cfg.min_speech
            if probability >= threshold:
                if self._run_start is None:
                    self._run_start = t - window
                self._run_length += window
                if self._run_length >= needed - 1e-9 and playback and self._is_echo is not None and self._is_echo():
                    self._run_start = None  # the assistant's own voice through the room: not a barge-in
                    self._run_length = 0.0
                elif self._run_length >= needed - 1e-9:
                    self.onset = self._run_start
                    self.speech_end = t
                    if self.listen_start is None:
                        self.listen_start = self.onset
                    events.append(SpeechStarted(self.onset, playback))
            else:
                self._run_start = None
                self._run_length = 0.0
        elif probability > cfg.deactivation:
            self.speech_end = t
            if self._paused:
                self._paused = False
                events.append(Resumed(t))
        else:
            assert self.speech_end is not None
            silent_for = t - self.speech_end
            if not self._paused and silent_for >= cfg.pause - 1e-9:
                self._paused = True
                events.append(Pause(self.speech_end))
        end = self._check_end(t)
        if end is not None:
            events.append(end)
        return events

    @property
    def end_silence(self) -> float:
        """The silence that ends the turn without a model decision."""
        return self.config.max_silence if self._use_model else self.config.silence

    def model_decided(self, t: float, speech_end: float, done: bool) -> list[Event]:
        """The model's answer for the pause after `speech_end`, known at audio time `t`. Stale answers (the user
        resumed since) are ignored."""
        if self.ended is not None or not self._use_model or not done or speech_end != self.speech_end:
            return []
        if not self._paused:
            return []
        self._model_done_at = speech_end
        end = self._check_end(max(t, self._last_t or t))
        return [end] if end is not None else []

    def model_failed(self, t: float) -> list[Event]:
        """The model cannot answer: the silence rule decides the rest of this turn."""
        self._use_model = False
        if self.ended is not None:
            return []
        end = self._check_end(max(t, self._last_t or t))
        return [end] if end is not None else []

    def tick(self, t: float) -> list[Event]:
        """Audio time advanced to `t` (ends the turn at the max listening time even if the VAD lags)."""
        if self.ended is not None or self.listen_start is None:
            return []
        if t - self.listen_start >= self.config.max_listen - 1e-9:
            self.ended = TurnEnded("max_duration", t)
            return [self.ended]
        if self._model_done_at is not None:  # a "done" held back by min_listen
            end = self._check_end(t)
            return [end] if end is not None else []
        return []

    def _check_end(self, t: float) -> TurnEnded | None:
        cfg = self.config
        if self.listen_start is None:
            return None
        if t - self.listen_start >= cfg.max_listen - 1e-9:
            self.ended = TurnEnded("max_duration", t)
        elif (
            cfg.silence_detection
            and self.speech_end is not None
            and t - self.listen_start >= cfg.min_listen - 1e-9
        ):
            if self._use_model and self._paused and self._model_done_at == self.speech_end:
                self.ended = TurnEnded("model", t)
            elif t - self.speech_end >= self.end_silence - 1e-9:
                self.ended = TurnEnded("silence", t)
        return self.ended
