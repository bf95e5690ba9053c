"""A stand-in for the local loop, for tests of the MCP layer and the service that need no audio: the real
`VoiceService` (call lock, transport choice, exchange log) with a transport that checks each request is within the
documented bounds and 'hears' a fixed reply. `gate`, when set, holds every call until it is set (a long exchange)."""

from __future__ import annotations

import asyncio
import math

from agent.config import Settings
from agent.protocol import LISTEN_MAX_SECONDS, MESSAGE_MAX_CHARS
from mcp_bridge.converse_types import ConverseRequest, ConverseResult, ProgressCallback, Stage, Timings
from mcp_bridge.service import VoiceService
from mcp_bridge.transport_interface import Transport, TransportHealth


class StandInTransport:
    """Takes the place of the local loop: checks the request it gets is within bounds, then 'hears' a reply."""

    name = "local"

    def __init__(self) -> None:
        self.requests: list[ConverseRequest] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def health(self) -> TransportHealth:
        return TransportHealth(name="local", available=True, detail="stand-in")

    async def converse(self, request: ConverseRequest, progress: ProgressCallback) -> ConverseResult:
        assert 0 < len(request.message) <= MESSAGE_MAX_CHARS and request.message.strip()
        listen = request.listen
        assert math.isfinite(listen.max_seconds) and 0 < listen.max_seconds <= LISTEN_MAX_SECONDS
        assert 0 <= listen.min_seconds <= listen.max_seconds
        self.requests.append(request)
        await progress(Stage.SPEAKING, request.message[:40])
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if request.wait_for_response:
            await progress(Stage.LISTENING, "listening")
        return ConverseResult(
            text="fine" if request.wait_for_response else "", heard_speech=request.wait_for_response,
            transport="local", timings=Timings(total_ms=1.0),
            ended_by="silence" if request.wait_for_response else "not_waiting",
        )

    async def aclose(self) -> None:
        pass


class StandInService(VoiceService):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.stand_in = StandInTransport()

    def local_transport(self) -> Transport:
        return self.stand_in
