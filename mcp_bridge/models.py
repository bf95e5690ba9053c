"""Typed requests, results and errors shared by every transport and by the MCP tools.

A transport (local loop, LiveKit room) takes a `ConverseRequest` and returns a `ConverseResult`, or raises a
`VoiceError` subclass whose message tells the user what to do. Nobody decides success by reading strings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

TransportName = Literal["local", "livekit"]


class Stage(StrEnum):
    SPEAKING = "speaking"
    LISTENING = "listening"
    TRANSCRIBING = "transcribing"
    DONE = "done"


ProgressCallback = Callable[[Stage, str], Awaitable[None]]


async def no_progress(stage: Stage, message: str) -> None:
    """A progress callback that reports nowhere."""


class ListenOptions(BaseModel):
    max_seconds: float = Field(120.0, gt=0, description="Stop listening after this long, speech or not.")
    min_seconds: float = Field(2.0, ge=0, description="Silence cannot end the turn before this much listening.")
    silence_ms: int = Field(1000, ge=100, description="Silence after speech that ends the turn.")
    vad_aggressiveness: int = Field(2, ge=0, le=3, description="0 permissive … 3 strict speech detection.")
    silence_detection: bool = Field(True, description="False: listen for the full max_seconds.")
    audio_cues: bool = Field(True, description="Short chimes when listening starts and stops.")
    language: str = "en"


class SpeakOptions(BaseModel):
    voice: str | None = None
    speed: float | None = Field(None, gt=0.25, le=4.0)


class ConverseRequest(BaseModel):
    message: str
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

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}".strip())


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
        self.audio_path = audio_path
        if audio_path is not None:
            hint = f"{hint} The reply was saved to {audio_path}.".strip()
        super().__init__(message, hint)


class TransportUnavailable(VoiceError):
    """The requested transport cannot serve a converse call right now."""

    code = "transport_unavailable"


class ConverseTimeout(VoiceError):
    """A transport did not answer within its bounded time."""

    code = "timeout"
