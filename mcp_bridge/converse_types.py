"""Typed requests, results and errors shared by every transport and by the MCP tools.

A transport (local loop, LiveKit room) takes a `ConverseRequest` and returns a `ConverseResult`, or raises a
`VoiceError` subclass whose message tells the user what to do. Nobody decides success by reading strings.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, ValidationError

from agent.protocol import (
    LISTEN_MAX_SECONDS,
    MESSAGE_MAX_CHARS,
    EndedBy,
    ListenOptions,
    OptionName,
    SpeakOptions,
)

if TYPE_CHECKING:
    from agent.config import Settings

# re-exported: one definition, in the protocol
__all__ = ["LISTEN_MAX_SECONDS", "EndedBy", "ListenOptions", "OptionName", "SpeakOptions"]

logger = logging.getLogger(__name__)

TransportName = Literal["local", "livekit"]
RequestedTransport = Literal["auto", "local", "livekit"]
"""What a caller may ask for: a transport, or `auto` (see `mcp_bridge.transport_choice.choose_transport`)."""


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


def guarded(progress: ProgressCallback) -> ProgressCallback:
    """`progress` that never raises: a client that dropped progress must not cost the user's reply.

    `VoiceService` wraps the caller's callback once; transports call what they are given."""

    async def report(stage: Stage, message: str) -> None:
        try:
            await progress(stage, message)
        except Exception as exc:
            logger.debug("progress report failed: %s", exc)

    return report


class ConverseRequest(BaseModel):
    message: str = Field(max_length=MESSAGE_MAX_CHARS, description="What to say; split longer text over calls.")
    wait_for_response: bool = True
    listen: ListenOptions = Field(default_factory=ListenOptions)
    speak: SpeakOptions = Field(default_factory=SpeakOptions)


def build_request(
    settings: Settings,
    *,
    message: str,
    wait_for_response: bool = True,
    listen_duration_max: float | None = None,
    listen_duration_min: float | None = None,
    voice: str | None = None,
    speed: float | None = None,
    language: str | None = None,
    audio_cues: bool | None = None,
    vad_aggressiveness: int | None = None,
    disable_silence_detection: bool = False,
) -> ConverseRequest:
    """A request from the `converse` arguments (the tool's and the CLI's), with the settings' defaults for what the
    caller left out. Raises `InvalidArgument` (a `ValueError`) saying what to fix; only the MCP tool turns it into
    a tool error."""
    if not message.strip():
        raise InvalidArgument("message is empty", "Pass the text to speak to the user.")
    if len(message) > MESSAGE_MAX_CHARS:
        raise InvalidArgument(
            f"message is {len(message)} characters long; one call speaks at most {MESSAGE_MAX_CHARS}",
            "Split it into several converse calls (wait_for_response=false for all but the last), "
            "or shorten it: a spoken turn should be brief.",
        )
    max_seconds = listen_duration_max if listen_duration_max is not None else settings.listen_max
    min_seconds = listen_duration_min if listen_duration_min is not None else settings.listen_min
    try:
        listen = ListenOptions(
            max_seconds=max_seconds,
            min_seconds=min(min_seconds, max_seconds),
            silence_ms=settings.silence_ms,
            vad_aggressiveness=settings.vad_aggressiveness if vad_aggressiveness is None else vad_aggressiveness,
            silence_detection=not disable_silence_detection,
            audio_cues=settings.audio_cues if audio_cues is None else audio_cues,
            language=language or settings.stt_language,
        )
        speak = SpeakOptions(voice=voice, speed=speed)
        return ConverseRequest(message=message, wait_for_response=wait_for_response, listen=listen, speak=speak)
    except ValidationError as exc:
        raise InvalidArgument(describe_validation(exc), ARGUMENT_HINT) from None


ARGUMENT_HINT = "Correct the argument and call again; the tool's input schema gives each argument's range."
_ARGUMENT_NAMES = {"max_seconds": "listen_duration_max", "min_seconds": "listen_duration_min"}


def describe_validation(exc: ValidationError) -> str:
    """`argument: problem (got value)` for each failed argument, named as the tool names them."""
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if str(part) not in ("listen", "speak")]
        name = ".".join(_ARGUMENT_NAMES.get(part, part) for part in loc) or "arguments"
        value = repr(error.get("input"))
        shown = value if len(value) <= 40 else value[:37] + "..."
        problems.append(f"{name}: {error['msg']} (got {shown})")
    return "; ".join(problems)


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
    ended_by: EndedBy = Field(
        "silence",
        description="silence: the silence rule ended the turn; model: the end-of-turn model judged the user done; "
        "queued: the reply was said earlier, while no converse was waiting (LiveKit)."
    )
    earlier: list[str] = Field(
        default_factory=list,
        description="Utterances the user made while no converse was waiting, oldest first (also at the start of text).",
    )
    ignored_options: list[OptionName] = Field(
        default_factory=list,
        description="Arguments of this call the provider that served it could not honour (e.g. a voice the "
        "fallback TTS does not have).",
    )


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


class InvalidArgument(VoiceError, ValueError):
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


class UnsupportedOption(ProviderError):
    """No configured provider can honour a per-call option (e.g. a voice no TTS has); nothing was spoken."""

    code = "unsupported_option"


class TransportUnavailable(VoiceError):
    """The requested transport cannot serve a converse call right now."""

    code = "transport_unavailable"


class ConverseTimeout(VoiceError):
    """A transport did not answer within its bounded time."""

    code = "timeout"
