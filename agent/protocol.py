"""The versioned wire protocol between the bridge (`mcp_bridge.livekit`) and the worker (`agent.worker`).

Both sides import these models; `docs/livekit-protocol.md` documents them for other clients. Everything is JSON
(pydantic); every message carries `v` (the protocol version) so a mismatch is reported, not guessed at.

Flow of one converse call (bridge = caller, worker = callee):

1. If the encoded `ConverseCall` fits into one RPC payload (`MAX_INLINE_BYTES`), it is the RPC payload.
   Otherwise the bridge first sends the message text as a text data stream (topic `TOPIC_MESSAGE`, attribute
   `ATTR_REQUEST_ID`), then calls the RPC with `message=None, message_stream=True`. Nothing is truncated.
2. While it works the worker publishes `Progress` packets (topic `TOPIC_PROGRESS`) to the caller about every
   `HEARTBEAT_INTERVAL` seconds; the bridge treats their absence as a dead worker.
3. The RPC response is a `ConverseOk` or `ConverseFailed`; if it does not fit, the response is a `StreamedBody`
   stub and the full body follows as a text stream on `TOPIC_RESPONSE`.

Besides calls, the worker announces every user turn it takes to the bridge (`TurnNotice`, topic `TOPIC_TURN`); an
answer lists the turn ids it carries (`delivered`) and those the worker still holds (`held`). The bridge returns a
noticed turn that no answer carried and the worker no longer holds (its job died, or an answer was lost).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, Field, TypeAdapter

PROTOCOL_VERSION = 2
"""2: `listen.audio_cues`, per-call `speak.voice`/`listen.language` honoured by the worker, `ignored_options` in
`ConverseOk`. A version-1 worker would silently drop those options, so it answers `unsupported_version` instead."""

RPC_CONVERSE = "voice-mcp.converse"
RPC_PING = "voice-mcp.ping"
RPC_CANCEL = "voice-mcp.cancel"
TOPIC_MESSAGE = "voice-mcp.message"
TOPIC_RESPONSE = "voice-mcp.response"
TOPIC_PROGRESS = "voice-mcp.progress"
TOPIC_TURN = "voice-mcp.turn"
TOPIC_TRACK_HEARD = "voice-mcp.track-heard"
"""A listener (the web page, any client that plays the worker's voice) tells the worker it receives audio of one of
its tracks: a reliable data packet to the worker's identity, payload `{"track_sid": "<sid>"}` (`TrackHeard`),
sent once per track, when the track's first audio arrives. The worker takes its track away while it is quiet
only when such a listener is in the room, and after bringing it back it speaks once the listener hears it again
(`agent.speaker_track`), so no first word is lost to a subscription still being set up."""
ATTR_REQUEST_ID = "voice-mcp.request_id"
ATTR_ROLE = "voice-mcp.role"
"""Participant attribute naming a voice-mcp participant's role (`bridge` or `worker`)."""
WORKER_IDENTITY_PREFIX = "voice-mcp-agent-"
"""The worker joins rooms as `<prefix><job id>`, so the bridge can tell it from users without server help."""

RPC_PAYLOAD_LIMIT = 15 * 1024
MAX_INLINE_BYTES = RPC_PAYLOAD_LIMIT - 1024
"""Largest JSON body sent inline; the rest of the limit is headroom for the SDK's envelope."""
HEARTBEAT_INTERVAL = 1.0

# --- bounds of one converse call (the bridge's request model and the wire models both use these) -------------------
LISTEN_MAX_SECONDS = 600.0
"""Longest a call may listen: a spoken reply, not a dictation session (every later call waits for this one)."""
MESSAGE_MAX_CHARS = 10_000
"""Longest message one call speaks: about ten minutes of speech. Longer text is split over several calls."""


# --- timing both sides rely on: the worker's own limits, and the bridge's bound on a whole call ---------------------
TURN_GRACE_SECONDS = 20.0
"""How long a turn the user is still speaking at `max_seconds` may take to finish before listening gives up."""


def speak_timeout(message: str, speed: float = 1.0) -> float:
    """A generous bound on how long speaking `message` may take (about 6 characters a second, plus slack)."""
    return 30.0 + len(message) / (6.0 * max(speed, 0.25))


def new_request_id() -> str:
    return uuid.uuid4().hex


# --- requests ----------------------------------------------------------------------------------------------------


class ListenOptions(BaseModel):
    """How to listen for the reply: one definition for the bridge's `ConverseRequest` and the wire `ConverseCall`."""

    max_seconds: float = Field(
        120.0, gt=0, le=LISTEN_MAX_SECONDS, allow_inf_nan=False, description="Stop listening after this long."
    )
    min_seconds: float = Field(
        2.0, ge=0, le=LISTEN_MAX_SECONDS, allow_inf_nan=False,
        description="Silence cannot end the turn before this much listening.",
    )
    silence_ms: int = Field(1000, ge=100, description="Silence after speech that ends the turn.")
    vad_aggressiveness: int | None = Field(
        None, ge=0, le=3, description="0 permissive … 3 strict speech detection; None: the configured setting."
    )
    silence_detection: bool = Field(True, description="False: listen for the full max_seconds.")
    audio_cues: bool = Field(True, description="Short chimes when listening starts and stops.")
    language: str | None = Field(None, description="Language of the reply for STT, e.g. 'en'; None: as configured.")


class SpeakOptions(BaseModel):
    """How to speak the message (same model on both sides of the wire)."""

    voice: str | None = Field(None, description="TTS voice (provider-specific); None: the configured voice.")
    speed: float | None = Field(None, gt=0.25, le=4.0, description="Speech rate, 1.0 normal; None: the configured.")


OptionName = Literal["voice", "speed", "language", "audio_cues"]
"""A per-call option as the `converse` tool names it, for `ignored_options`."""


class ConverseCall(BaseModel):
    """RPC `voice-mcp.converse` request."""

    v: int = PROTOCOL_VERSION
    id: str = Field(default_factory=new_request_id)
    message: str | None = Field(None, description="The text to speak; None when it travels as a data stream.")
    message_stream: bool = False
    message_chars: int = Field(0, ge=0, description="Length of the message, to check a streamed one arrived whole.")
    wait_for_response: bool = True
    listen: ListenOptions = Field(default_factory=ListenOptions)
    speak: SpeakOptions = Field(default_factory=SpeakOptions)


class PingCall(BaseModel):
    """RPC `voice-mcp.ping` request."""

    v: int = PROTOCOL_VERSION


class CancelCall(BaseModel):
    """RPC `voice-mcp.cancel` request: the caller gave up on converse call `id` (its turns are kept)."""

    v: int = PROTOCOL_VERSION
    id: str


class CancelReply(BaseModel):
    v: int = PROTOCOL_VERSION
    cancelled: bool = Field(description="False when no such call was running.")


# --- responses ---------------------------------------------------------------------------------------------------


class Utterance(BaseModel):
    """One complete user turn, as the worker's session finalised it."""

    id: str = Field(
        default_factory=new_request_id,
        description="The worker's id for this turn (a merged reply: its first turn's); the bridge returns each once.",
    )
    text: str
    source: Literal["voice", "text"] = "voice"
    received_at: float = Field(default_factory=time.time, description="Unix time the turn was complete.")
    started_speaking_at: float | None = None
    stopped_speaking_at: float | None = None
    transcription_delay_ms: float | None = None
    answered_by_llm: bool = Field(False, description="The worker's LLM already answered this turn.")


class WireTimings(BaseModel):
    first_audio_ms: float | None = None
    speak_ms: float | None = None
    listen_ms: float | None = None
    end_of_speech_to_result_ms: float | None = None
    stt_ms: float | None = None


EndedBy = Literal["silence", "model", "max_duration", "not_waiting", "queued"]
"""Why a converse call stopped listening (the same type in `ConverseOk` and the bridge's `ConverseResult`)."""


class ConverseOk(BaseModel):
    v: int = PROTOCOL_VERSION
    id: str
    status: Literal["ok"] = "ok"
    reply: Utterance | None = Field(None, description="What the user said after (or over) this message.")
    earlier: list[Utterance] = Field(
        default_factory=list, description="Turns completed while no converse call was waiting, oldest first."
    )
    heard_speech: bool
    interrupted: bool = False
    ended_by: EndedBy = "silence"
    timings: WireTimings = Field(default_factory=WireTimings)
    stt_provider: str | None = None
    tts_provider: str | None = None
    ignored_options: list[OptionName] = Field(
        default_factory=list, description="Options of this call the provider that served it could not honour."
    )
    delivered: list[str] = Field(
        default_factory=list, description="Ids of every turn this answer carries (earlier, and each part of reply)."
    )
    held: list[str] = Field(
        default_factory=list, description="Ids of the turns the worker still holds for the next call."
    )


ErrorCode = Literal[
    "busy", "no_user", "bad_request", "unsupported_version", "unsupported_option", "message_missing",
    "speech_failed", "cancelled", "internal",
]


class ConverseFailed(BaseModel):
    v: int = PROTOCOL_VERSION
    id: str
    status: Literal["error"] = "error"
    code: ErrorCode
    message: str
    hint: str = ""


class StreamedBody(BaseModel):
    """Stub RPC response: the real `ConverseOk`/`ConverseFailed` follows on `TOPIC_RESPONSE`."""

    v: int = PROTOCOL_VERSION
    id: str
    status: Literal["streamed"] = "streamed"
    chars: int


ConverseResponse = Annotated[ConverseOk | ConverseFailed, Field(discriminator="status")]
RpcResponse = Annotated[ConverseOk | ConverseFailed | StreamedBody, Field(discriminator="status")]
converse_response_adapter: TypeAdapter[ConverseOk | ConverseFailed] = TypeAdapter(ConverseResponse)
rpc_response_adapter: TypeAdapter[ConverseOk | ConverseFailed | StreamedBody] = TypeAdapter(RpcResponse)


class PingReply(BaseModel):
    v: int = PROTOCOL_VERSION
    agent_name: str
    user_identity: str | None = Field(None, description="The user participant the session listens to.")
    busy: bool = False
    queued: int = Field(0, description="Turns waiting for the next converse call.")
    stt_provider: str | None = None
    tts_provider: str | None = None
    llm: str | None = None


Stage = Literal["received", "speaking", "listening", "transcribing", "done"]


class TurnNotice(BaseModel):
    """Published by the worker to the bridge (topic `TOPIC_TURN`) the moment it takes a user turn, so the bridge can
    return the turn itself if the job that holds it dies or its answer is lost (`mcp_bridge.livekit.turn_ledger`)."""

    v: int = PROTOCOL_VERSION
    utterance: Utterance


class TrackHeard(BaseModel):
    """Sent by a listener to the worker (topic `TOPIC_TRACK_HEARD`) when the first audio of one of the worker's
    tracks reaches it. Extra fields are ignored, so clients need not send `v`."""

    track_sid: str = Field(min_length=1, max_length=64)


class Progress(BaseModel):
    v: int = PROTOCOL_VERSION
    id: str
    seq: int
    stage: Stage
    detail: str = ""
    elapsed_ms: float = 0.0


# --- encoding: inline when it fits, data stream when not ---------------------------------------------------------


def utf8_len(text: str) -> int:
    return len(text.encode("utf-8"))


def encode_call(call: ConverseCall) -> tuple[str, str | None]:
    """The RPC payload for `call`, and the message text to send as a stream first (None when inline)."""
    message = call.message or ""
    inline = call.model_copy(update={"message_stream": False, "message_chars": len(message)})
    payload = inline.model_dump_json()
    if utf8_len(payload) <= MAX_INLINE_BYTES:
        return payload, None
    stub = call.model_copy(update={"message": None, "message_stream": True, "message_chars": len(message)})
    return stub.model_dump_json(), message


def encode_response(response: ConverseOk | ConverseFailed) -> tuple[str, str | None]:
    """The RPC response payload, and the full body to send as a stream (None when it fits inline)."""
    body = response.model_dump_json()
    if utf8_len(body) <= MAX_INLINE_BYTES:
        return body, None
    return StreamedBody(id=response.id, chars=len(body)).model_dump_json(), body


class ProtocolError(ValueError):
    """A peer sent something this protocol version cannot read."""

    def __init__(self, message: str, code: ErrorCode = "bad_request") -> None:
        self.code: ErrorCode = code
        super().__init__(message)


def decode_call(payload: str) -> ConverseCall:
    try:
        call = ConverseCall.model_validate_json(payload)
    except ValueError as exc:
        raise ProtocolError(f"unreadable converse call: {exc}") from exc
    if call.v != PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {call.v} is not supported (this side speaks {PROTOCOL_VERSION})", "unsupported_version"
        )
    if call.message is None and not call.message_stream:
        raise ProtocolError("converse call has neither a message nor message_stream=true")
    return call


def decode_rpc_response(payload: str) -> ConverseOk | ConverseFailed | StreamedBody:
    try:
        return rpc_response_adapter.validate_json(payload)
    except ValueError as exc:
        raise ProtocolError(f"unreadable converse response: {exc}") from exc


def decode_response_body(body: str) -> ConverseOk | ConverseFailed:
    try:
        return converse_response_adapter.validate_json(body)
    except ValueError as exc:
        raise ProtocolError(f"unreadable streamed converse response: {exc}") from exc
