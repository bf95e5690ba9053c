"""Echo-path detection on loudness envelopes (pure logic, synthetic 10 ms RMS values on a simulated clock)."""

from __future__ import annotations

import numpy as np

from mcp_bridge.local.echo import ECHO_TAIL, LOUD_RENDER, EchoPath


def speech_envelope(seconds: float, seed: int) -> np.ndarray:
    """Syllable-like loudness: bursts of 80–250 ms with gaps, RMS 0–3000, per 10 ms."""
    rng = np.random.default_rng(seed)
    out: list[float] = []
    while len(out) < seconds * 100:
        out += [float(rng.uniform(800, 3000))] * int(rng.integers(8, 25))
        out += [float(rng.uniform(0, 50))] * int(rng.integers(3, 12))
    return np.array(out[: int(seconds * 100)])


def run(path: EchoPath, render: np.ndarray, capture: np.ndarray) -> list[str]:
    verdicts = []
    for i, (r, c) in enumerate(zip(render, capture, strict=True)):
        t = i / 100
        path.render(float(r), now=t)
        verdicts.append(path.capture(float(c), now=t))
    return verdicts


def test_a_microphone_that_hears_the_speaker_is_an_echo_path() -> None:
    render = speech_envelope(3.0, 1)
    delay = 18  # 180 ms from the speaker to the microphone
    capture = np.concatenate([np.full(delay, 20.0), render[:-delay] * 0.3]) + 20
    verdicts = run(EchoPath(), render, capture)
    assert "none" not in verdicts
    assert verdicts[-1] == "echo"


def test_a_silent_microphone_during_speech_has_no_echo_path() -> None:
    render = speech_envelope(3.0, 2)
    verdicts = run(EchoPath(), render, np.zeros_like(render))
    assert verdicts[-1] == "none"
    assert verdicts[50] == "unknown"  # no verdict before the assistant has spoken for a second


def test_a_microphone_that_hears_something_else_stays_cancelled() -> None:
    """A user talking from the start, or a loudspeaker echo whose timing is blurred: the cancelled signal is kept."""
    render = speech_envelope(3.0, 3)
    user = speech_envelope(3.0, 4) * 0.8  # speaks at the same time, independently
    verdicts = run(EchoPath(), render, user)
    assert set(verdicts) == {"unknown"}


def test_an_echo_path_that_appears_later_wins() -> None:
    render = speech_envelope(5.0, 5)
    capture = np.zeros_like(render)
    capture[250:] = render[240:-10] * 0.3 + 20  # the user unplugs the headphones after 2.5 s
    verdicts = run(EchoPath(), render, capture)
    assert "none" in verdicts[:250]
    assert verdicts[-1] == "echo"


def test_the_microphone_skips_the_canceller_once_the_speaker_has_been_quiet_for_the_echo_tail() -> None:
    """Right after a short message the verdict is still "unknown"; the user's first words must not be damped then."""
    path = EchoPath()
    assert path.speaker_quiet(now=0.0)  # the assistant has not spoken yet
    render = speech_envelope(0.8, 6)  # too short a message for a verdict
    run(path, render, np.zeros_like(render))
    last_loud = max(i for i, r in enumerate(render) if r > LOUD_RENDER) / 100
    assert path.verdict == "unknown"
    assert not path.speaker_quiet(now=last_loud + ECHO_TAIL / 2)  # its echo may still be arriving
    assert path.speaker_quiet(now=last_loud + ECHO_TAIL + 0.01)


def test_the_assistants_own_echo_is_explained_and_a_user_talking_over_it_is_not() -> None:
    render = speech_envelope(4.0, 6)
    delay = 18
    echo = np.concatenate([np.full(delay, 0.0), render[:-delay] * 0.3]) + 20
    only_echo = EchoPath()
    run(only_echo, render, echo)
    assert only_echo.explains_microphone()  # residual echo must not count as a barge-in

    user = speech_envelope(4.0, 7) * 0.8
    talking_over = EchoPath()
    run(talking_over, render, echo + np.concatenate([np.zeros(300), user[300:]]))  # the user starts at 3 s
    assert not talking_over.explains_microphone()


def test_without_an_echo_path_nothing_is_explained_by_the_speaker() -> None:
    render = speech_envelope(3.0, 8)
    headphones = EchoPath()
    run(headphones, render, np.concatenate([np.zeros(200), speech_envelope(1.0, 9)]))  # quiet, then the user
    assert headphones.verdict == "none" and not headphones.explains_microphone()


def test_a_found_echo_path_lengthens_the_tail_by_its_delay() -> None:
    render = speech_envelope(3.0, 7)
    delay = 18  # 180 ms from the speaker to the microphone
    capture = np.concatenate([np.full(delay, 20.0), render[:-delay] * 0.3]) + 20
    path = EchoPath()
    run(path, render, capture)
    assert path.verdict == "echo" and abs(path.echo_delay - 0.18) <= 0.04, path.echo_delay
    last_loud = max(i for i, r in enumerate(render) if r > LOUD_RENDER) / 100
    assert not path.speaker_quiet(now=last_loud + ECHO_TAIL + 0.1)  # the delayed echo is still arriving
    assert path.speaker_quiet(now=last_loud + ECHO_TAIL + path.echo_delay + 0.01)
