"""The end-of-turn rules, on synthetic VAD probabilities (no audio needed)."""

from __future__ import annotations

from agent.speech.vad import activation_threshold
from mcp_bridge.local.endpointing import (
    EndpointConfig,
    Endpointer,
    Event,
    Pause,
    Resumed,
    SpeechStarted,
    TurnEnded,
)

W = 0.032  # one Silero window


def feed(ep: Endpointer, start: float, seconds: float, p: float) -> tuple[float, list[Event]]:
    """Windows of probability `p` from audio time `start` for `seconds`; returns the end time and the events."""
    events: list[Event] = []
    t = start
    while t < start + seconds - 1e-9:
        t += W
        events += ep.observe(t, p, W)
        events += ep.tick(t)
    return t, events


def config(**kw: object) -> EndpointConfig:
    base: dict[str, object] = dict(
        max_seconds=10.0, min_seconds=0.0, silence_ms=1000, vad_aggressiveness=2, silence_detection=True
    )
    base.update(kw)
    return EndpointConfig.from_options(**base)  # type: ignore[arg-type]


def test_turn_ends_after_the_silence_that_follows_speech() -> None:
    ep = Endpointer(config())
    ep.start_listening(0.0)
    t, events = feed(ep, 0.0, 0.5, 0.0)
    assert events == []
    t, events = feed(ep, t, 1.0, 0.9)
    assert isinstance(events[0], SpeechStarted) and not events[0].during_playback
    assert abs(events[0].onset - 0.5) < 2 * W
    speech_end = t
    t, events = feed(ep, t, 0.9, 0.0)
    assert any(isinstance(e, Pause) for e in events)
    assert not any(isinstance(e, TurnEnded) for e in events)
    t, events = feed(ep, t, 0.2, 0.0)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert ended and ended[0].reason == "silence"
    assert ended[0].at - speech_end >= 1.0 - 1e-6
    assert ep.speech_end == speech_end


def test_pause_then_resume_does_not_end_the_turn() -> None:
    ep = Endpointer(config())
    ep.start_listening(0.0)
    t, _ = feed(ep, 0.0, 1.0, 0.9)
    t, events = feed(ep, t, 0.6, 0.0)
    assert any(isinstance(e, Pause) for e in events)
    t, events = feed(ep, t, 0.5, 0.9)
    assert any(isinstance(e, Resumed) for e in events)
    assert ep.ended is None


def test_no_speech_ends_at_max_duration() -> None:
    ep = Endpointer(config(max_seconds=3.0))
    ep.start_listening(1.0)
    _, events = feed(ep, 1.0, 5.0, 0.1)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert len(ended) == 1 and ended[0].reason == "max_duration"
    assert abs(ended[0].at - 4.0) < 2 * W
    assert not ep.heard_speech


def test_min_seconds_holds_the_turn_open() -> None:
    ep = Endpointer(config(min_seconds=4.0))
    ep.start_listening(0.0)
    t, _ = feed(ep, 0.0, 0.5, 0.9)
    t, events = feed(ep, t, 5.0, 0.0)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert ended and ended[0].reason == "silence" and ended[0].at >= 4.0 - 1e-6


def test_silence_detection_off_listens_for_the_whole_max() -> None:
    ep = Endpointer(config(max_seconds=4.0, silence_detection=False))
    ep.start_listening(0.0)
    t, _ = feed(ep, 0.0, 1.0, 0.9)
    _, events = feed(ep, t, 4.0, 0.0)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert ended and ended[0].reason == "max_duration" and ep.heard_speech


def test_speech_during_playback_is_a_barge_in_and_needs_more_evidence() -> None:
    ep = Endpointer(config())
    # a short blip (residual echo) while the assistant speaks is not speech
    _, events = feed(ep, 0.0, 0.15, 0.95)
    t, more = feed(ep, 0.15, 0.3, 0.0)
    assert not [e for e in events + more if isinstance(e, SpeechStarted)]
    # probability just over the normal threshold is not enough during playback
    t, events = feed(ep, t, 1.0, activation_threshold(2) + 0.05)
    assert not [e for e in events if isinstance(e, SpeechStarted)]
    _, events = feed(ep, t, 0.5, 0.95)
    started = [e for e in events if isinstance(e, SpeechStarted)]
    assert started and started[0].during_playback
    assert ep.listen_start == started[0].onset


def test_aggressiveness_raises_the_threshold() -> None:
    assert [activation_threshold(a) for a in range(4)] == sorted(activation_threshold(a) for a in range(4))
    strict = Endpointer(config(vad_aggressiveness=3))
    strict.start_listening(0.0)
    _, events = feed(strict, 0.0, 1.0, 0.55)
    assert not events
    lenient = Endpointer(config(vad_aggressiveness=0))
    lenient.start_listening(0.0)
    _, events = feed(lenient, 0.0, 1.0, 0.55)
    assert any(isinstance(e, SpeechStarted) for e in events)


def model_config(**kw: object) -> EndpointConfig:
    base: dict[str, object] = dict(
        max_seconds=30.0, min_seconds=0.0, silence_ms=1000, vad_aggressiveness=2, silence_detection=True,
        turn_model=True, max_turn_silence_ms=3000,
    )
    base.update(kw)
    return EndpointConfig.from_options(**base)  # type: ignore[arg-type]


def test_with_the_model_a_done_answer_ends_the_turn_at_once() -> None:
    ep = Endpointer(model_config())
    ep.start_listening(0.0)
    t, _ = feed(ep, 0.0, 1.0, 0.9)
    t, events = feed(ep, t, 0.3, 0.0)
    [pause] = [e for e in events if isinstance(e, Pause)]
    assert not [e for e in events if isinstance(e, TurnEnded)]
    ended = ep.model_decided(t + 0.05, pause.speech_end, done=True)
    assert ended and isinstance(ended[0], TurnEnded) and ended[0].reason == "model"


def test_with_the_model_not_done_waits_for_the_long_bound() -> None:
    ep = Endpointer(model_config())
    ep.start_listening(0.0)
    t, _ = feed(ep, 0.0, 1.0, 0.9)
    t, events = feed(ep, t, 0.3, 0.0)
    [pause] = [e for e in events if isinstance(e, Pause)]
    assert ep.model_decided(t, pause.speech_end, done=False) == []
    t, events = feed(ep, t, 2.0, 0.0)  # 2.3 s of silence: longer than silence_ms, shorter than the bound
    assert not [e for e in events if isinstance(e, TurnEnded)]
    _, events = feed(ep, t, 1.0, 0.0)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert ended and ended[0].reason == "silence" and ended[0].at - pause.speech_end >= 3.0 - 1e-6


def test_a_done_answer_for_an_earlier_pause_is_ignored_after_the_user_resumed() -> None:
    ep = Endpointer(model_config())
    ep.start_listening(0.0)
    t, _ = feed(ep, 0.0, 1.0, 0.9)
    t, events = feed(ep, t, 0.3, 0.0)
    [pause] = [e for e in events if isinstance(e, Pause)]
    t, _ = feed(ep, t, 0.5, 0.9)  # the user goes on before the model answers
    assert ep.model_decided(t, pause.speech_end, done=True) == []
    assert ep.ended is None


def test_a_failing_model_hands_the_turn_to_the_silence_rule() -> None:
    ep = Endpointer(model_config())
    ep.start_listening(0.0)
    t, _ = feed(ep, 0.0, 1.0, 0.9)
    speech_end = t
    t, _ = feed(ep, t, 0.3, 0.0)
    assert ep.model_failed(t) == []
    _, events = feed(ep, t, 0.8, 0.0)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert ended and ended[0].reason == "silence" and ended[0].at - speech_end < 1.1


def test_min_seconds_holds_back_a_done_answer() -> None:
    ep = Endpointer(model_config(min_seconds=3.0))
    ep.start_listening(0.0)
    t, _ = feed(ep, 0.0, 1.0, 0.9)
    t, events = feed(ep, t, 0.3, 0.0)
    [pause] = [e for e in events if isinstance(e, Pause)]
    assert ep.model_decided(t, pause.speech_end, done=True) == []
    _, events = feed(ep, t, 2.0, 0.0)
    ended = [e for e in events if isinstance(e, TurnEnded)]
    assert ended and ended[0].reason == "model" and ended[0].at >= 3.0 - 1e-6
