"""WebRTC audio processing for the microphone: echo cancellation, noise suppression, high-pass filter.

The microphone passes every captured 10 ms frame through `process_capture`; the player hands every 10 ms it sends
to the speaker to `process_render` (the "reverse stream"). With both, WebRTC's echo canceller removes the
assistant's own voice from the microphone signal, so the user can talk over the assistant without headphones and
the assistant does not interrupt itself.

Both methods are called from PortAudio's callback threads, as LiveKit's own console does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from livekit import rtc

log = logging.getLogger(__name__)


class EchoCanceller:
    """One `rtc.AudioProcessingModule` shared by one microphone and one player for one conversation."""

    def __init__(self, *, echo_cancellation: bool = True, noise_suppression: bool = True) -> None:
        self.echo_cancellation = echo_cancellation
        self._apm = rtc.AudioProcessingModule(
            echo_cancellation=echo_cancellation,
            noise_suppression=noise_suppression,
            high_pass_filter=True,
            auto_gain_control=False,
        )
        self._input_delay = 0.0
        self._output_delay = 0.0
        self._failed = False

    def set_input_delay(self, seconds: float) -> None:
        self._input_delay = max(0.0, seconds)

    def set_output_delay(self, seconds: float) -> None:
        self._output_delay = max(0.0, seconds)

    def process_capture(self, frame: rtc.AudioFrame) -> None:
        """Clean one 10 ms microphone frame in place."""
        if self.echo_cancellation:
            try:  # the delay hint often fails to apply; WebRTC's own delay estimator copes without it
                self._apm.set_stream_delay_ms(int((self._input_delay + self._output_delay) * 1000))
            except RuntimeError:
                pass
        self._process(self._apm.process_stream, frame)

    def process_render(self, frame: rtc.AudioFrame) -> None:
        """Tell the echo canceller about one 10 ms frame that is going out to the speaker."""
        if self.echo_cancellation:
            self._process(self._apm.process_reverse_stream, frame)

    def _process(self, method: Callable[[rtc.AudioFrame], None], frame: rtc.AudioFrame) -> None:
        try:
            method(frame)
        except RuntimeError as exc:  # a bad frame must not kill the audio thread; the frame passes unprocessed
            if not self._failed:
                log.warning("audio processing failed, passing audio through: %s", exc)
                self._failed = True
