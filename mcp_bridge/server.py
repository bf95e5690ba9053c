"""The MCP layer: tools, resources and progress. Voice work itself lives in `VoiceService` and the transports."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from pydantic import Field, ValidationError

from agent import package_info
from agent.config import Settings
from agent.protocol import LISTEN_MAX_SECONDS, MESSAGE_MAX_CHARS

from .livekit.rooms import CloseResult, RoomList, RoomManager, RoomStatus
from .models import (
    ConverseRequest,
    ConverseResult,
    InvalidArgument,
    ListenOptions,
    SpeakOptions,
    Stage,
    VoiceError,
)
from .service import MODEL_LOAD_GRACE, StatusReport, VoiceService

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Sent to the model with every request: keep it short. The long guidance is the voice://guide resource.
CONVERSE_DESCRIPTION = """Speak `message` to the user aloud and return what they answer, as text.

Keep messages short and conversational. Set wait_for_response=false to only speak. transport: "auto"
(LiveKit room if configured and a worker answers, else this computer's microphone/speaker), "local" or
"livekit". The result has `text` (the reply; empty with heard_speech=false when the user said nothing),
the transport used and per-stage timings. Read the voice://guide resource for usage guidance."""

STATUS_DESCRIPTION = "Report the speech providers, audio devices and transports with their health, and what to fix."

JOIN_LINK_DESCRIPTION = (
    "Create a one-time link (url, code, expires_at) the user opens on a phone or browser to join the voice room. "
    "It works once, until it expires; share it only with the user."
)

_STAGE_PROGRESS = {Stage.WAITING: 0, Stage.SPEAKING: 1, Stage.LISTENING: 2, Stage.TRANSCRIBING: 3, Stage.DONE: 4}


def _guide() -> str:
    return (Path(__file__).parent / "resources" / "guide.md").read_text(encoding="utf-8")


def create_server(settings: Settings, service: VoiceService | None = None, *, prewarm: bool = True) -> MCPServer:
    voice_service = service or VoiceService(settings)

    rooms = room_manager(settings, voice_service)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[None]:
        warming = asyncio.create_task(voice_service.prewarm()) if prewarm else None
        if rooms is not None:
            rooms.start()  # idle room cleanup
        try:
            yield
        finally:
            if warming is not None:  # not cancelled: its thread would go on loading after the loop is gone
                await asyncio.wait({warming}, timeout=MODEL_LOAD_GRACE)
            if rooms is not None:
                await rooms.aclose()
            await voice_service.aclose()  # also waits for models still loading on their own threads

    server = VoiceMCPServer(
        name="voice-mcp",
        instructions="Voice conversations with the user: call `converse` to speak and hear the reply.",
        version=package_info.version(),
        lifespan=lifespan,
    )

    @server.tool(description=CONVERSE_DESCRIPTION)
    async def converse(
        message: Annotated[str, Field(description="What to say to the user.")],
        ctx: Context,
        wait_for_response: bool = True,
        transport: Literal["auto", "local", "livekit"] = "auto",
        listen_duration_max: Annotated[
            float | None,
            Field(gt=0, le=LISTEN_MAX_SECONDS, allow_inf_nan=False, description="Max listen seconds."),
        ] = None,
        listen_duration_min: Annotated[
            float | None,
            Field(
                ge=0, le=LISTEN_MAX_SECONDS, allow_inf_nan=False, description="Seconds before silence may end the turn."
            ),
        ] = None,
        voice: Annotated[str | None, Field(description="TTS voice (provider-specific).")] = None,
        speed: Annotated[float | None, Field(gt=0.25, le=4.0, description="Speech rate, 1.0 normal.")] = None,
        language: Annotated[str | None, Field(description="Language of the reply, e.g. 'en'.")] = None,
        chimes: Annotated[bool | None, Field(description="Audio cues when listening starts/stops.")] = None,
        vad_aggressiveness: Annotated[
            int | None, Field(ge=0, le=3, description="Speech detection strictness, 0 lax … 3 strict.")
        ] = None,
        disable_silence_detection: Annotated[
            bool, Field(description="Listen for the full max duration instead of stopping at silence.")
        ] = False,
    ) -> ConverseResult:
        try:
            request = build_request(
                settings,
                message=message,
                wait_for_response=wait_for_response,
                listen_duration_max=listen_duration_max,
                listen_duration_min=listen_duration_min,
                voice=voice,
                speed=speed,
                language=language,
                chimes=chimes,
                vad_aggressiveness=vad_aggressiveness,
                disable_silence_detection=disable_silence_detection,
            )
        except VoiceError as exc:
            raise ToolError(f"[{exc.code}] {exc}") from exc

        async def progress(stage: Stage, text: str) -> None:
            try:
                await ctx.report_progress(_STAGE_PROGRESS[stage], len(_STAGE_PROGRESS), f"{stage.value}: {text}")
            except Exception as exc:  # a client that dropped progress must not cost the reply
                logger.debug("progress notification failed: %s", exc)

        try:
            return await voice_service.converse(request, transport, progress)
        except VoiceError as exc:
            raise ToolError(f"[{exc.code}] {exc}") from exc

    @server.tool(description=STATUS_DESCRIPTION)
    async def voice_status() -> StatusReport:
        return await voice_service.status()

    register_room_tools(server, rooms)

    @server.tool(description=JOIN_LINK_DESCRIPTION)
    def create_join_link(
        ttl_seconds: Annotated[int, Field(ge=1, le=86400, description="Seconds the link works.")] = 600,
    ) -> dict[str, str]:
        from .access.links import create_join_link as make_link
        from .access.store import AccessError

        try:
            return make_link(settings, ttl_seconds).as_dict()
        except AccessError as exc:
            raise ToolError(f"[{exc.code}] {exc}") from exc

    @server.resource("voice://guide", name="guide", mime_type="text/markdown", description="How to use converse well.")
    def guide() -> str:
        return _guide()

    return server


def room_manager(settings: Settings, service: VoiceService) -> RoomManager | None:
    if not settings.livekit_configured:
        return None
    return RoomManager(settings, transport=service.livekit_transport)


def register_room_tools(server: MCPServer, rooms: RoomManager | None) -> None:
    """list_rooms, room_status and close_room (mcp_bridge/livekit/rooms.py does the work)."""

    def manager() -> RoomManager:
        if rooms is None:
            raise ToolError(
                "[livekit_not_configured] LiveKit is not configured: set LIVEKIT_URL, LIVEKIT_API_KEY "
                "and LIVEKIT_API_SECRET"
            )
        return rooms

    async def run(work: Awaitable[T]) -> T:
        try:
            return await work
        except VoiceError as exc:
            raise ToolError(f"[{exc.code}] {exc}") from exc

    @server.tool(
        description="List the LiveKit rooms: participants (identity, kind, role), whether a worker is in "
        "each, created and last activity times, and what idle cleanup deleted."
    )
    async def list_rooms() -> RoomList:
        return await run(manager().list_rooms())

    @server.tool(
        description="Status of a LiveKit room (default: the persistent room): participants, whether the "
        "worker is there and answers, whether a converse is waiting, queued utterances, connection quality."
    )
    async def room_status(
        room: Annotated[str | None, Field(description="Room name; default the persistent room.")] = None,
    ) -> RoomStatus:
        return await run(manager().room_status(room))

    @server.tool(
        description="Close (delete) a LiveKit room, disconnecting everybody in it. The persistent room "
        "is refused unless force=true."
    )
    async def close_room(
        room: Annotated[str, Field(description="Name of the room to close.")],
        force: Annotated[bool, Field(description="Also close the persistent room.")] = False,
    ) -> CloseResult:
        return await run(manager().close_room(room, force=force))


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
    chimes: bool | None = None,
    vad_aggressiveness: int | None = None,
    disable_silence_detection: bool = False,
) -> ConverseRequest:
    """Tool arguments, with the settings' defaults for what the caller left out. Raises `InvalidArgument`."""
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
            audio_cues=settings.audio_cues if chimes is None else chimes,
            language=language or settings.stt_language,
        )
        speak = SpeakOptions(voice=voice, speed=speed)
        return ConverseRequest(message=message, wait_for_response=wait_for_response, listen=listen, speak=speak)
    except ValidationError as exc:
        raise InvalidArgument(describe_validation(exc), _ARGUMENT_HINT) from None


_ARGUMENT_HINT = "Correct the argument and call again; the tool's input schema gives each argument's range."
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


class VoiceMCPServer(MCPServer):
    """`MCPServer` whose every tool failure starts with a `[code]`: arguments that fail the input schema become
    `[invalid_argument]` with what to fix, and a crash `[internal]` (its details stay in the server log)."""

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError as exc:
            logger.error("tool %r crashed", name, exc_info=exc.__cause__)
            raise ToolError(
                f"[internal] {name} failed unexpectedly. Try again; if it persists, run with VOICE_MCP_DEBUG=1 "
                "and report the server log."
            ) from exc
        except ToolError as exc:
            cause = exc.__cause__
            if isinstance(cause, ToolError) and str(cause).startswith("["):  # ours: already says what and why
                raise ToolError(str(cause)) from cause
            if isinstance(cause, ValidationError):
                raise ToolError(f"[invalid_argument] {describe_validation(cause)}. {_ARGUMENT_HINT}") from exc
            tools = [tool.name for tool in await self.list_tools()]
            if name not in tools:
                raise ToolError(
                    f"[invalid_argument] There is no tool {name!r}. The tools are: {', '.join(tools)}."
                ) from exc
            raise ToolError(f"[invalid_argument] {exc}") from exc

