"""Deciding when the user's turn starts and ends, from voice-activity probabilities. Pure logic, no audio.

Times are seconds on the microphone's audio clock. The listener feeds one `observe(t, p)` per VAD window
(probability `p` that the window ending at `t` is speech) and `tick(t)` as audio arrives; each returns what changed.

Rules:
- Before `start_listening(t)` the assistant is still speaking: speech must be a little more certain and longer to
  count (residual echo must not interrupt the assistant). Speech found then is a barge-in, and listening starts at
  its onset.
- Speech starts after `min_speech` seconds of windows at or above the activation threshold; its onset is the
  first of those windows.
- Once speech started, a window above the deactivation threshold is speech; anything else is silence.
- After `pause` seconds of silence a `Pause` is reported (a moment to transcribe early); speech after it is
  reported as `Resumed`.
- The turn ends after `silence` seconds of silence, but not before `min_listen` seconds of listening, and never
  later than `max_listen` seconds after listening started (speech or not). With silence detection off only
  `max_listen` ends it.
"""

from __future__ import annotations

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

    @classmethod
    def from_options(
        cls, *, max_seconds: float, min_seconds: float, silence_ms: int, vad_aggressiveness: int,
        silence_detection: bool,
    ) -> EndpointConfig:
        activation = activation_threshold(vad_aggressiveness)
        silence = silence_ms / 1000
        return cls(
            max_listen=max_seconds,
            min_listen=min(min_seconds, max_seconds),
            silence=silence,
            silence_detection=silence_detection,
            activation=activation,
            deactivation=deactivation_threshold(activation),
            pause=max(0.2, min(0.5, silence / 3)),
        )


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
    reason: Literal["silence", "max_duration"]
    at: float


Event = SpeechStarted | Pause | Resumed | TurnEnded


class Endpointer:
    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.listen_start: float | None = None
        self.onset: float | None = None
        self.speech_end: float | None = None
        """End of the last speech window (audio time)."""
        self.ended: TurnEnded | None = None
        self._run_start: float | None = None
        self._run_length = 0.0
        self._paused = False

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
        cfg = self.config
        if self.onset is None:
            playback = self.listen_start is None
            threshold = min(0.95, cfg.activation + cfg.barge_in_margin) if playback else cfg.activation
            needed = cfg.barge_in_min_speech if playback else cfg.min_speech
            if probability >= threshold:
                if self._run_start is None:
                    self._run_start = t - window
                self._run_length += window
                if self._run_length >= needed - 1e-9:
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

    def tick(self, t: float) -> list[Event]:
        """Audio time advanced to `t` (ends the turn at the max listening time even if the VAD lags)."""
        if self.ended is not None or self.listen_start is None:
            return []
        if t - self.listen_start >= self.config.max_listen - 1e-9:
            self.ended = TurnEnded("max_duration", t)
            return [self.ended]
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
            and t - self.speech_end >= cfg.silence - 1e-9
            and t - self.listen_start >= cfg.min_listen - 1e-9
        ):
            self.ended = TurnEnded("silence", t)
        return self.ended
