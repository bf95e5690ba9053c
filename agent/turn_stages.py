"""When each stage of the room path's end of turn happened, for the worker's log and the latency benchmark.

One `TurnStages` per session (it lives on the session's `TappedVAD`). The VAD tap, the STT node and the turn
detector stamp the moments of the current turn's last speech segment (wall clock, `time.time()`, so another
process on the same machine, such as the benchmark, can line them up with its own clock); when the session
commits the turn the worker logs them once (`report`), as milliseconds after the VAD's end of speech:

    turn stages: {"speech_ended": <unix s>, "vad_event_ms": .., "transcript_ms": .., "session_told_ms": ..,
                  "decided_ms": .., "probability": .., "committed_ms": ..}

- `speech_ended`: the end of speech as the VAD dates it (its END_OF_SPEECH minus the silence it waited);
- `vad_event_ms`: the VAD's END_OF_SPEECH (after its `PAUSE_MS` of silence and Silero's tail);
- `transcript_ms`: the last segment's transcript is out;
- `session_told_ms`: the session got that END_OF_SPEECH (its turn decision starts);
- `decided_ms` / `probability`: the end-of-turn model's last answer for this pause (model rule only);
- `committed_ms`: the session committed the turn (`on_user_turn_completed`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

MARKER = "turn stages: "
"""What the log line starts with (the benchmark looks for it)."""


@dataclass
class TurnStages:
    speech_ended: float | None = None
    vad_event: float | None = None
    transcript: float | None = None
    session_told: float | None = None
    decided: float | None = None
    probability: float | None = None

    def segment_ended(self, speech_ended: float) -> None:
        """A new END_OF_SPEECH from the VAD: the stages after it start again."""
        self.speech_ended = speech_ended
        self.vad_event = time.time()
        self.transcript = None
        self.session_told = None

    def decided_now(self, probability: float) -> None:
        self.decided = time.time()
        self.probability = probability

    def report(self, committed: float | None = None) -> str:
        """The log line's JSON: milliseconds after `speech_ended` (None: the stage did not happen)."""
        committed = time.time() if committed is None else committed

        def after(moment: float | None) -> float | None:
            if moment is None or self.speech_ended is None:
                return None
            return round((moment - self.speech_ended) * 1000, 1)

        return json.dumps(
            {
                "speech_ended": self.speech_ended,
                "vad_event_ms": after(self.vad_event),
                "transcript_ms": after(self.transcript),
                "session_told_ms": after(self.session_told),
                "decided_ms": after(self.decided),
                "probability": None if self.probability is None else round(self.probability, 3),
                "committed_ms": after(committed),
            }
        )

    def clear(self) -> None:
        self.speech_ended = self.vad_event = self.transcript = self.session_told = self.decided = None
        self.probability = None
