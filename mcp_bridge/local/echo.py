"""WebRTC audio processing for the microphone: echo cancellation, noise suppression, high-pass filter.

The microphone passes every captured 10 ms frame through `process_capture`; the player hands every 10 ms it sends
to the speaker to `process_render` (the "reverse stream"). With both, WebRTC's echo canceller removes the
assistant's own voice from the microphone signal, so the user can talk over the assistant without headphones and
the assistant does not interrupt itself.

Headphones: with no echo path, WebRTC's canceller still damps the microphone strongly for the first seconds of
playback, so a user talking over the assistant is heard late or not at all. So the canceller also watches whether
there is an echo path at all (`EchoPath`), from the loudness of what goes to the speaker and of the raw microphone
(on PortAudio's stream clock). Once the assistant has spoken for a second, a raw microphone that stayed quiet
meanwhile (and did not follow the speaker) has no echo path: from then on its signal skips the echo canceller
(noise suppression and the high-pass filter stay), and the user can interrupt at once. A microphone that hears
anything else while the assistant speaks keeps the cancelled signal — before the verdict, when it follows the
speaker (loudspeakers), and when it is ambiguous — so the assistant's own voice never reaches the voice activity
detector uncancelled; an echo path that shows up later switches the cancelled signal back on.

Silence: once the speaker has been quiet for `ECHO_TAIL`, there is no echo to remove, and the canceller would only
damp the user (it did: the first words of a reply given right after a short message were lost, because the verdict
was still "unknown"). So then the microphone skips the canceller whatever the verdict.

The canceller is not enough on its own: on a busy machine it lets residual echo through (seen in the speaker test:
the assistant's words transcribed as the user's barge-in). So a barge-in must also pass `hears_only_the_assistant`:
speech the listener finds while the assistant talks counts only if the raw microphone's loudness is not just the
speaker's, delayed and scaled.

Both methods are called from PortAudio's callback threads, as LiveKit's own console does.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from livekit import rtc

log = logging.getLogger(__name__)


Verdict = Literal["unknown", "echo", "none"]

BIN = 0.02
"""Seconds per envelope bin."""
WINDOW = 1.5
"""Seconds of envelope compared."""
MAX_LAG = 0.5
"""Largest speaker → microphone delay looked for (output buffer + room + input buffer)."""
LOUD_RENDER = 300.0
"""int16 RMS of a speaker bin that counts as the assistant speaking."""
QUIET_CAPTURE = 150.0
"""int16 RMS (about -47 dBFS) below which the raw microphone counts as hearing nothing of the assistant."""
ECHO_TAIL = 0.3
"""Seconds after the last loud speaker audio left the speaker (by PortAudio's clock) during which its echo can still
reach the microphone through the room (reverberation included; the streams' buffering is in the clock). Where an
echo path was found, its measured delay is added. After that there is nothing to cancel."""
SPEECH_WINDOW = 0.8
"""Seconds of microphone judged by `explains_microphone` (a barge-in candidate is 0.25 s of speech and more)."""
ECHO_MAX_LAG = 2.0
"""Largest speaker → microphone delay `explains_microphone` looks for. Far above `MAX_LAG`: on a busy machine the
buffers grow, and the speaker test heard the assistant's echo arrive when the speaker had been quiet for over a
second (between two sentences whose synthesis was late, or after the last one)."""
EXPLAINED = 0.35
"""Largest share of the microphone's envelope energy left unexplained by the speaker's (scaled, delayed) for the
microphone to count as hearing only the assistant."""


class EchoPath:
    """Is there an acoustic path from the speaker to the microphone? Loudness envelopes of both, compared.

    `render(rms, at)` and `capture(rms, at)` are fed per 10 ms from the two audio threads (`at`: when that audio
    leaves the speaker / reached the microphone, on one clock; arrival time when not known); `verdict` is
    "unknown" until the assistant has spoken for `decide_after` seconds. Then "none" if the raw microphone stayed
    quiet and did not follow the speaker; "echo" when it follows the speaker (final); otherwise still "unknown".
    "none" turns into "echo" if the microphone starts following the speaker later.
    """

    def __init__(self, *, decide_after: float = 1.0, echo_corr: float = 0.5) -> None:
        self._lock = threading.Lock()
        self._render: collections.deque[tuple[float, float]] = collections.deque()
        self._render_history: collections.deque[tuple[float, float]] = collections.deque()
        """The speaker's loudness over a longer span, for `explains_microphone`."""
        self._capture: collections.deque[tuple[float, float]] = collections.deque()
        self._decide_after = decide_after
        self._echo_corr = echo_corr
        self._next_check = 0.0
        self.verdict: Verdict = "unknown"
        self.correlation: float | None = None
        self._last_loud_render: float | None = None
        self.echo_delay = 0.0
        """The speaker → microphone delay of the echo path found (seconds; 0 while none was found)."""

    def render(self, rms: float, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        if rms > LOUD_RENDER:
            self._last_loud_render = now  # one float, written by one thread: no lock needed
        self._add(self._render, rms, now)
        self._add(self._render_history, rms, now, keep=SPEECH_WINDOW + ECHO_MAX_LAG)

    def speaker_quiet(self, now: float | None = None) -> bool:
        """True when nothing loud has left the speaker for `ECHO_TAIL` (plus a found echo path's delay) before `now`,
        so no echo can arrive any more."""
        last = self._last_loud_render
        now = time.perf_counter() if now is None else now
        return last is None or now - last > ECHO_TAIL + self.echo_delay

    def capture(self, rms: float, now: float | None = None) -> Verdict:
        now = time.perf_counter() if now is None else now
        self._add(self._capture, rms, now)
        if now >= self._next_check and self.verdict != "echo":
            self._next_check = now + 0.1
            self._check(now)
        return self.verdict

    def _add(
        self, series: collections.deque[tuple[float, float]], rms: float, now: float | None,
        keep: float = WINDOW + MAX_LAG,
    ) -> None:
        now = time.perf_counter() if now is None else now
        with self._lock:
            series.append((now, rms))
            while series and series[0][0] < now - keep:
                series.popleft()

    def _bins(self, series: list[tuple[float, float]], start: float, count: int) -> np.ndarray:
        out = np.zeros(count)
        hits = np.zeros(count)
        for t, rms in series:
            i = int((t - start) / BIN)
            if 0 <= i < count:
                out[i] += rms
                hits[i] += 1
        return out / np.maximum(hits, 1)

    def explains_microphone(self, window: float = SPEECH_WINDOW) -> bool:
        """Is what the raw microphone heard in the last `window` seconds the assistant's own voice? True when its
        loudness envelope is, but for `EXPLAINED` of its energy, the speaker's envelope scaled and delayed (by up
        to `MAX_LAG`): an echo. A user talking adds an envelope of their own, which no delay of the speaker's
        explains. False without an echo path (verdict "none") or while the speaker was quiet."""
        if self.verdict == "none":
            return False
        with self._lock:
            render, capture = list(self._render_history), list(self._capture)
        if not capture:
            return False
        now = capture[-1][0]
        n_lag = int(ECHO_MAX_LAG / BIN)
        n = max(2, int(window / BIN))
        start = now - window - ECHO_MAX_LAG
        spoken = self._bins(render, start, n + n_lag)
        heard = self._bins(capture, start, n + n_lag)[n_lag:]  # one grid for both: no rounding between them
        if float(np.percentile(heard, 90)) < QUIET_CAPTURE:
            return False
        heard = heard - heard.mean()  # the envelopes' shapes are compared, not their (always positive) levels
        energy = float(heard @ heard)
        if energy <= 0:
            return False
        best = 1.0
        for lag in range(n_lag + 1):
            reference = spoken[n_lag - lag : n_lag - lag + n]
            if (reference > LOUD_RENDER).sum() * BIN < window / 2:
                continue  # the assistant was mostly quiet then: nothing to explain the microphone with
            reference = reference - reference.mean()
            power = float(reference @ reference)
            if power <= 0:
                continue
            gain = max(0.0, float(heard @ reference) / power)
            best = min(best, float(((heard - gain * reference) ** 2).sum()) / energy)
        log.debug("microphone unexplained by the speaker: %.2f (speaker loud %.2f s of %.2f)", best,
                  float((spoken > LOUD_RENDER).sum()) * BIN, window + ECHO_MAX_LAG)
        return best <= EXPLAINED

    def _check(self, now: float) -> None:
        with self._lock:
            render, capture = list(self._render), list(self._capture)
        start = now - WINDOW - MAX_LAG
        n_lag = int(MAX_LAG / BIN)
        n = int(WINDOW / BIN)
        spoken = self._bins(render, start, n + n_lag)
        heard = self._bins(capture, start + MAX_LAG, n)
        if (spoken > LOUD_RENDER).sum() * BIN < self._decide_after:
            return  # the assistant has not said enough in the window to judge
        best, best_lag = -1.0, 0
        for lag in range(n_lag + 1):
            # the microphone at time t may hear what the speaker played at t - lag
            reference = spoken[n_lag - lag : n_lag - lag + n]
            if reference.std() < 1e-6 or heard.std() < 1e-6:
                continue
            correlation = float(np.corrcoef(reference, heard)[0, 1])
            if correlation > best:
                best, best_lag = correlation, lag
        self.correlation = best
        if best >= self._echo_corr and float(np.percentile(heard, 90)) >= QUIET_CAPTURE:
            self.echo_delay = max(self.echo_delay, best_lag * BIN)
            if self.verdict != "echo":
                log.info("echo path found (speaker → microphone correlation %.2f): echo cancellation stays on", best)
            self.verdict = "echo"
        elif self.verdict == "unknown" and best < self._echo_corr and float(np.percentile(heard, 90)) < QUIET_CAPTURE:
            log.info("no echo path (the microphone stayed quiet while the assistant spoke): not echo-cancelled, so the "
                     "user can interrupt at once")
            self.verdict = "none"


def stream_time(times: Any, name: str) -> float | None:
    """A PortAudio stream time from a callback's `times` (one clock for input and output), None if not given."""
    try:
        value = float(getattr(times, name))
    except (AttributeError, TypeError, ValueError):
        return None
    return value if value > 0 else None


def _rms(frame: rtc.AudioFrame) -> float:
    samples = np.frombuffer(frame.data, dtype=np.int16).astype(np.float32)
    return float(np.sqrt((samples**2).mean())) if samples.size else 0.0


class EchoCanceller:
    """One `rtc.AudioProcessingModule` shared by one microphone and one player for one conversation (and, with echo
    cancellation on, a second one without it, used once `EchoPath` finds no echo path)."""

    def __init__(self, *, echo_cancellation: bool = True, noise_suppression: bool = True) -> None:
        self.echo_cancellation = echo_cancellation
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=echo_cancellation,
            noise_suppression=noise_suppression,
            high_pass_filter=True,
            auto_gain_control=False,
        )
        self._plain = (
            rtc.AudioProcessingModule(
                echo_cancellation=False, noise_suppression=noise_suppression, high_pass_filter=True,
                auto_gain_control=False,
            )
            if echo_cancellation
            else None
        )
        self.echo_path = EchoPath()
        self._input_delay = 0.0
        self._output_delay = 0.0
        self._failed = False

    def set_input_delay(self, seconds: float) -> None:
        self._input_delay = max(0.0, seconds)

    def set_output_delay(self, seconds: float) -> None:
        self._output_delay = max(0.0, seconds)

    def process_capture(self, frame: rtc.AudioFrame, at: float | None = None) -> None:
        """Clean one 10 ms microphone frame in place (`at`: when it was captured, on PortAudio's stream clock)."""
        if self._plain is None:
            self._process(self._apm.process_stream, frame)
            return
        raw = rtc.AudioFrame(bytearray(frame.data.tobytes()), frame.sample_rate, frame.num_channels,
                             frame.samples_per_channel)
        verdict = self.echo_path.capture(_rms(raw), at)
        try:  # the delay hint often fails to apply; WebRTC's own delay estimator copes without it
            self._apm.set_stream_delay_ms(int((self._input_delay + self._output_delay) * 1000))
        except RuntimeError:
            pass
        self._process(self._apm.process_stream, frame)  # always: the canceller stays adapted if an echo shows up
        self._process(self._plain.process_stream, raw)
        if verdict == "none" or self.echo_path.speaker_quiet(at):
            frame.data[:] = raw.data

    def hears_only_the_assistant(self) -> bool:
        """Whether the microphone's latest sound is the assistant's echo (`EchoPath.explains_microphone`): a barge-in
        then is the assistant's own voice through the room, left over by the canceller (it is, on a busy machine),
        and must not stop it. Always False with echo cancellation off (no reference to compare with)."""
        return self._plain is not None and self.echo_path.explains_microphone()

    def process_render(self, frame: rtc.AudioFrame, at: float | None = None) -> None:
        """Tell the echo canceller about one 10 ms frame that is going out to the speaker (`at`: when it reaches
        the speaker, on PortAudio's stream clock)."""
        if self.echo_cancellation:
            self.echo_path.render(_rms(frame), at)
            self._process(self._apm.process_reverse_stream, frame)

    def _process(self, method: Callable[[rtc.AudioFrame], None], frame: rtc.AudioFrame) -> None:
        try:
            method(frame)
        except RuntimeError as exc:  # a bad frame must not kill the audio thread; the frame passes unprocessed
            if not self._failed:
                log.warning("audio processing failed, passing audio through: %s", exc)
                self._failed = True
