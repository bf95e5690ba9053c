"""Typed requests, results and errors shared by every transport and by the MCP tools.

A transport (local loop, LiveKit room) takes a `ConverseRequest` and returns a `ConverseResult`, or raises a
`VoiceError` subclass whose message tells the user what to do. Nobody decides success by reading strings.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from agent.protocol import LISTEN_MAX_SECONDS, MESSAGE_MAX_CHARS

TransportName = Literal["local", "livekit"]


class Stage(StrEnum):
    WAITING = "waiting"
    """For the previous converse call to finish (calls run one at a time)."""
    SPEAKING = "speaking"
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    DONE = "done"


ProgressCallback = Callable[[Stage, str], Awaitable[None]]


async def no_progress(stage: Stage, message: str) -> None:
    """A progress callback that reports nowhere."""


class ListenOptions(BaseModel):
    max_seconds: float = Field(
        120.0, gt=0, le=LISTEN_MAX_SECONDS, allow_inf_nan=False,
        description="Stop listening after this long, speech or not.",
    )
    min_seconds: float = Field(
        2.0, ge=0, le=LISTEN_MAX_SECONDS, allow_inf_nan=False,
        description="Silence cannot end the turn before this much listening.",
    )
    silence_ms: int = Field(1000, ge=100, description="Silence after speech that ends the turn.")
    vad_aggressiveness: int = Field(2, ge=0, le=3, description="0 permissive … 3 strict speech detection.")
    silence_detection: bool = Field(True, description="False: listen for the full max_seconds.")
    audio_cues: bool = Field(True, description="Short chimes when listening starts and stops.")
    language: str = "en"


class SpeakOptions(BaseModel):
    voice: str | None = None
    speed: float | None = Field(None, gt=0.25, le=4.0)


class ConverseRequest(BaseModel):
    message: str = Field(max_length=MESSAGE_MAX_CHARS, description="What to say; split longer text over calls.")
    wait_for_response: bool = True
    listen: ListenOptions = Field(default_factory=ListenOptions)
    speak: SpeakOptions = Field(default_factory=SpeakOptions)


class Timings(BaseModel):
    """Per-stage timings in milliseconds; a stage that did not happen is None."""

    first_audio_ms: float | None = Field(None, description="converse called → first TTS audio out.")
    speak_ms: float | None = Field(None, description="Time spent speaking the message.")
    listen_ms: float | None = Field(None, description="Listening started → end of the user's speech.")
    end_of_speech_to_result_ms: float | None = Field(
        None, description="End of the user's speech → transcript ready (what the user waits for)."
    )
    stt_ms: float | None = Field(None, description="STT work on the final audio.")
    total_ms: float = Field(0.0, description="converse called → result.")


class ConverseResult(BaseModel):
    text: str = Field(description="What the user said; empty when they said nothing.")
    heard_speech: bool = Field(description="False when listening ended without any speech.")
    transport: TransportName
    transport_reason: str = Field("", description="Why this transport was used (e.g. a fallback).")
    timings: Timings = Field(default_factory=Timings)
    stt_provider: str | None = None
    tts_provider: str | None = None
    interrupted: bool = Field(False, description="The user started talking before the message was finished.")
    ended_by: Literal["silence", "model", "max_duration", "not_waiting", "queued"] = Field(
        "silence",
        description="silence: the silence rule ended the turn; model: the end-of-turn model judged the user done; "
        "queued: the reply was said earlier, while no converse was waiting (LiveKit)."
    )
    earlier: list[str] = Field(
        default_factory=list,
        description="Utterances the user made while no converse was waiting, oldest first (also at the start of text).",
    )
    audio_path: Path | None = Field(None, description="Kept recording, when recording is enabled.")


class VoiceError(Exception):
    """Base of every error a user may see from voice-mcp. `hint` says what to do."""

    code = "voice_error"
    audio_path: Path | None = None
    """Where the user's reply (or the part heard before the failure) was saved, if it was."""

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(join_sentences(message, hint))

    def with_saved_reply(self, audio_path: Path | None, note: str) -> VoiceError:
        """The same error, its hint ending with `note` (where the reply went, or why it could not be kept)."""
        error = copy.copy(self)
        error.hint = join_sentences(self.hint, note)
        error.args = (join_sentences(self.message, error.hint),)
        error.audio_path = audio_path
        return error


def join_sentences(*parts: str) -> str:
    """`parts` as one text, each ending with a full stop unless it has its own punctuation (so a message and its
    hint never run together)."""
    out: list[str] = []
    for part in parts:
        part = part.strip()
        if not part:
            continue
        if out and part[0].islower():
            part = part[0].upper() + part[1:]
        out.append(part if part[-1] in ".!?:;)" else part + ".")
    return " ".join(out)


class InvalidArgument(VoiceError):
    """A tool argument outside what a call accepts."""

    code = "invalid_argument"


class Busy(VoiceError):
    """Another converse call held the microphone and speaker for longer than a waiting call may wait."""

    code = "busy"


class AudioDeviceError(VoiceError):
    """No usable input or output device, or the device failed while in use."""

    code = "audio_device"


class ProviderError(VoiceError):
    """Every configured STT or TTS provider failed."""

    code = "provider"


class TranscriptionFailed(ProviderError):
    """STT failed on a reply that was recorded. The audio is kept at `audio_path` so nothing is lost."""

    code = "transcription_failed"

    def __init__(self, message: str, hint: str = "", audio_path: Path | None = None) -> None:
        if audio_path is not None:
            hint = join_sentences(hint, f"The reply was saved to {audio_path}")
        super().__init__(message, hint)
        self.audio_path = audio_path


class TransportUnavailable(VoiceError):
    """The requested transport cannot serve a converse call right now."""

    code = "transport_unavailable"


class ConverseTimeout(VoiceError):
    """A transport did not answer within its bounded time."""

    code = "timeout"
