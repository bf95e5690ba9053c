"""The MCP layer: tools, resources and progress. Voice work itself lives in `VoiceService` and the transports.

The server's lifespan builds what it serves with (`ServerState`: the `VoiceService` and, with LiveKit, the room
manager) and closes it when the server stops; the tools reach it through their request context. Tool arguments
become a `ConverseRequest` by `mcp_bridge.converse_types.build_request`; only this module turns errors into tool errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from pydantic import Field, ValidationError

from agent import package_info
from agent.config import Settings
from agent.protocol import LISTEN_MAX_SECONDS

from .converse_types import (
    ARGUMENT_HINT,
    ConverseResult,
    ProgressCallback,
    RequestedTransport,
    Stage,
    VoiceError,
    build_request,
    describe_validation,
)
from .livekit.rooms import CloseResult, RoomList, RoomManager, RoomStatus
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

ServiceFactory = Callable[[Settings], VoiceService]


@dataclass
class ServerState:
    """What the lifespan built for one run of the server; closed when the server stops."""

    service: VoiceService
    rooms: RoomManager | None


def create_server(
    settings: Settings,
    service: VoiceService | ServiceFactory | None = None,
    *,
    prewarm: bool = True,
    prewarm_grace: float = MODEL_LOAD_GRACE,
) -> MCPServer:
    """The MCP server. `service`: a factory the lifespan calls (default `VoiceService`; a stand-in in tests), or a
    ready service; either way the lifespan closes it when the server stops. `prewarm_grace`: how long stopping
    waits for a model load still under way before cancelling the prewarm."""
    server = VoiceMCPServer(
        name="voice-mcp",
        instructions="Voice conversations with the user: call `converse` to speak and hear the reply.",
        version=package_info.version(),
        lifespan=_lifespan(settings, service, prewarm=prewarm, prewarm_grace=prewarm_grace),
    )
    server.tool(description=CONVERSE_DESCRIPTION)(converse)
    server.tool(description=STATUS_DESCRIPTION)(voice_status)
    register_room_tools(server)
    server.tool(description=JOIN_LINK_DESCRIPTION)(create_join_link)
    server.resource("voice://guide", name="guide", mime_type="text/markdown", description="How to use converse well.")(
        guide
    )
    return server


def _lifespan(
    settings: Settings, service: VoiceService | ServiceFactory | None, *, prewarm: bool, prewarm_grace: float
) -> Callable[[MCPServer], AbstractAsyncContextManager[ServerState]]:
    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[ServerState]:
        voice_service = service if isinstance(service, VoiceService) else (service or VoiceService)(settings)
        rooms = room_manager(settings, voice_service)
        warming = asyncio.create_task(voice_service.prewarm()) if prewarm else None
        if rooms is not None:
            rooms.start()  # idle room cleanup
        try:
            yield ServerState(voice_service, rooms)
        finally:
            if warming is not None:
                await _stop_prewarm(warming, prewarm_grace)
            if rooms is not None:
                await rooms.aclose()
            await voice_service.aclose()  # also waits for models still loading on their own threads

    return lifespan


async def _stop_prewarm(warming: asyncio.Task[None], grace: float) -> None:
    """Give a model load under way `grace` seconds (its thread would go on loading after the loop is gone), then
    cancel what is left and await it: nothing of the prewarm outlives the server."""
    await asyncio.wait({warming}, timeout=grace)
    warming.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):  # prewarm reports its own failures
        await warming


def _state(ctx: Context) -> ServerState:
    """What the lifespan built for this server."""
    return cast(ServerState, ctx.request_context.lifespan_context)


# --- tools -----------------------------------------------------------------------------------------------------------


async def converse(
    message: Annotated[str, Field(description="What to say to the user.")],
    ctx: Context,
    wait_for_response: bool = True,
    transport: RequestedTransport = "auto",
    listen_duration_max: Annotated[
        float | None, Field(gt=0, le=LISTEN_MAX_SECONDS, allow_inf_nan=False, description="Max listen seconds.")
    ] = None,
    listen_duration_min: Annotated[
        float | None,
        Field(ge=0, le=LISTEN_MAX_SECONDS, allow_inf_nan=False, description="Seconds before silence may end the turn."),
    ] = None,
    voice: Annotated[str | None, Field(description="TTS voice (provider-specific).")] = None,
    speed: Annotated[float | None, Field(gt=0.25, le=4.0, description="Speech rate, 1.0 normal.")] = None,
    language: Annotated[str | None, Field(description="Language of the reply, e.g. 'en'.")] = None,
    audio_cues: Annotated[bool | None, Field(description="Chimes when listening starts/stops.")] = None,
    vad_aggressiveness: Annotated[
        int | None, Field(ge=0, le=3, description="Speech detection strictness, 0 lax … 3 strict.")
    ] = None,
    disable_silence_detection: Annotated[
        bool, Field(description="Listen for the full max duration instead of stopping at silence.")
    ] = False,
) -> ConverseResult:
    service = _state(ctx).service
    try:
        request = build_request(
            service.settings,
            message=message,
            wait_for_response=wait_for_response,
            listen_duration_max=listen_duration_max,
            listen_duration_min=listen_duration_min,
            voice=voice,
            speed=speed,
            language=language,
            audio_cues=audio_cues,
            vad_aggressiveness=vad_aggressiveness,
            disable_silence_detection=disable_silence_detection,
        )
        return await service.converse(request, transport, _progress_to(ctx))
    except VoiceError as exc:  # InvalidArgument included: the one place errors become tool errors
        raise ToolError(f"[{exc.code}] {exc}") from exc


def _progress_to(ctx: Context) -> ProgressCallback:
    """Stages as MCP progress notifications (`VoiceService` keeps a failing client from costing the reply)."""

    async def progress(stage: Stage, text: str) -> None:
        await ctx.report_progress(_STAGE_PROGRESS[stage], len(_STAGE_PROGRESS), f"{stage.value}: {text}")

    return progress


async def voice_status(ctx: Context) -> StatusReport:
    return await _state(ctx).service.status()


def create_join_link(
    ctx: Context,
    ttl_seconds: Annotated[int, Field(ge=1, le=86400, description="Seconds the link works.")] = 600,
) -> dict[str, str]:
    from .access.links import create_join_link as make_link
    from .access.store import AccessError

    try:
        return make_link(_state(ctx).service.settings, ttl_seconds).as_dict()
    except AccessError as exc:
        raise ToolError(f"[{exc.code}] {exc}") from exc


def guide() -> str:
    return (Path(__file__).parent / "resources" / "guide.md").read_text(encoding="utf-8")


def room_manager(settings: Settings, service: VoiceService) -> RoomManager | None:
    if not settings.livekit_configured:
        return None
    return RoomManager(settings, transport=service.livekit_transport)


def register_room_tools(server: MCPServer) -> None:
    """list_rooms, room_status and close_room (mcp_bridge/livekit/rooms.py does the work)."""

    def manager(ctx: Context) -> RoomManager:
        rooms = _state(ctx).rooms
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
    async def list_rooms(ctx: Context) -> RoomList:
        return await run(manager(ctx).list_rooms())

    @server.tool(
        description="Status of a LiveKit room (default: the persistent room): participants, whether the "
        "worker is there and answers, whether a converse is waiting, queued utterances, connection quality."
    )
    async def room_status(
        ctx: Context,
        room: Annotated[str | None, Field(description="Room name; default the persistent room.")] = None,
    ) -> RoomStatus:
        return await run(manager(ctx).room_status(room))

    @server.tool(
        description="Close (delete) a LiveKit room, disconnecting everybody in it. The persistent room "
        "is refused unless force=true."
    )
    async def close_room(
        ctx: Context,
        room: Annotated[str, Field(description="Name of the room to close.")],
        force: Annotated[bool, Field(description="Also close the persistent room.")] = False,
    ) -> CloseResult:
        return await run(manager(ctx).close_room(room, force=force))


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
                raise ToolError(f"[invalid_argument] {describe_validation(cause)}. {ARGUMENT_HINT}") from exc
            tools = [tool.name for tool in await self.list_tools()]
            if name not in tools:
                raise ToolError(
                    f"[invalid_argument] There is no tool {name!r}. The tools are: {', '.join(tools)}."
                ) from exc
            raise ToolError(f"[invalid_argument] {exc}") from exc
