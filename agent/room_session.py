"""The worker's `AgentSession` for one room, built for a small per-room cost and an early transcript.

- One VAD per room: the session's Silero stream (a `TappedVAD`) also cuts the segments the STT node
  transcribes (`agent.segment_stt`), instead of livekit's `stt.StreamAdapter` running a second one.
- Segments close after a short pause (`turn_taking.PAUSE_MS`) and are transcribed at once; the turn ends by the
  rule of `agent.turn_taking` (end-of-turn model or silence).
- The user's audio arrives at 16 kHz (what Silero and Whisper use: the native side resamples 48 → 16 kHz once;
  `agent.devices.SAMPLE_RATE`, the input `UserLinker` installs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livekit.agents import NOT_GIVEN, AgentSession, llm, stt, tts, vad

from .config import Settings
from .speech import tune_vad
from .speech.vad_tap import TappedVAD
from .turn_taking import PAUSE_MS, RoomTurns, TurnModelHandle


@dataclass
class RoomSession:
    session: AgentSession
    segments: TappedVAD
    turns: RoomTurns
    vad: vad.VAD

    def tune_listening(self, silence_ms: int, vad_aggressiveness: int | None) -> None:
        """A converse call's listening options: silence for the turn rule, aggressiveness for the VAD."""
        self.turns.tune(silence_ms)
        if vad_aggressiveness is not None:
            tune_vad(self.vad, aggressiveness=vad_aggressiveness)  # type: ignore[arg-type]


def build_room_session(
    settings: Settings,
    *,
    vad: vad.VAD,
    stt: stt.STT,
    tts: tts.TTS,
    llm: llm.LLM | None,
    turn_model: TurnModelHandle | None = None,
    turn_model_problem: str | None = None,
) -> RoomSession:
    """`vad` should close segments after `PAUSE_MS` of silence (`build_vad(settings, silence_ms=PAUSE_MS)`);
    `turn_model` / `turn_model_problem`: what `turn_taking.load_turn_model` gave."""
    segments = TappedVAD(vad)
    turns = RoomTurns(settings, model=turn_model, unavailable=turn_model_problem)
    session: AgentSession[Any] = AgentSession(
        vad=segments,
        stt=stt,
        tts=tts,
        llm=llm if llm is not None else NOT_GIVEN,
        turn_handling=turns.turn_handling(barge_in=settings.barge_in),
        user_away_timeout=None,
    )
    turns.attach(session)
    if turns.detector is not None:
        turns.detector.on_decided = segments.stages.decided_now
    return RoomSession(session=session, segments=segments, turns=turns, vad=vad)


__all__ = ["PAUSE_MS", "RoomSession", "build_room_session"]
