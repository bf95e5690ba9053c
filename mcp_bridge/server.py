"""The MCP layer: tools, resources and progress. Voice work itself lives in `VoiceService` and the transports."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, cast

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from agent import package_info
from agent.config import Settings

from .models import ConverseResult, RequestedTransport, Stage, VoiceError, build_request
from .service import StatusReport, VoiceService

logger = logging.getLogger(__name__)

# Sent to the model with every request: keep it short. The long guidance is the voice://guide resource.
CONVERSE_DESCRIPTION = """Speak `message` to the user aloud and return what they answer, as text.

Keep messages short and conversational. Set wait_for_response=false to only speak. transport: "auto"
(LiveKit room if configured and a worker answers, else this computer's microphone/speaker), "local" or
"livekit". The result has `text` (the reply; empty with heard_speech=false when the user said nothing),
the transport used and per-stage timings. Read the voice://guide resource for usage guidance."""

STATUS_DESCRIPTION = "Report the speech providers, audio devices and transports with their health, and what to fix."

_STAGE_PROGRESS = {Stage.SPEAKING: 1, Stage.LISTENING: 2, Stage.TRANSCRIBING: 3, Stage.DONE: 4}


def _guide() -> str:
    return (Path(__file__).parent / "resources" / "guide.md").read_text(encoding="utf-8")


ServiceFactory = Callable[[Settings], VoiceService]


def create_server(
    settings: Settings, service_factory: ServiceFactory = VoiceService, *, prewarm: bool = True
) -> MCPServer:
    """The MCP server. The lifespan builds the `VoiceService` (`service_factory`, e.g. a stand-in in tests) and
    closes it, with everything it built, when the server stops."""

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[VoiceService]:
        voice_service = service_factory(settings)
        warming = asyncio.create_task(voice_service.prewarm()) if prewarm else None
        try:
            yield voice_service
        finally:
            if warming is not None:
                warming.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await warming
            await voice_service.aclose()

    server = MCPServer(
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
        transport: RequestedTransport = "auto",
        listen_duration_max: Annotated[float | None, Field(gt=0, description="Max listen seconds.")] = None,
        listen_duration_min: Annotated[
            float | None, Field(ge=0, description="Seconds before silence may end the turn.")
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
        except ValueError as exc:
            raise ToolError(f"invalid argument: {exc}") from exc

        async def progress(stage: Stage, text: str) -> None:
            await ctx.report_progress(_STAGE_PROGRESS[stage], len(_STAGE_PROGRESS), f"{stage.value}: {text}")

        try:
            return await _service(ctx).converse(request, transport, progress)
        except VoiceError as exc:
            raise ToolError(f"[{exc.code}] {exc}") from exc

    @server.tool(description=STATUS_DESCRIPTION)
    async def voice_status(ctx: Context) -> StatusReport:
        return await _service(ctx).status()

    @server.resource("voice://guide", name="guide", mime_type="text/markdown", description="How to use converse well.")
    def guide() -> str:
        return _guide()

    return server


def _service(ctx: Context) -> VoiceService:
    """The `VoiceService` the lifespan built for this server."""
    return cast(VoiceService, ctx.request_context.lifespan_context)
