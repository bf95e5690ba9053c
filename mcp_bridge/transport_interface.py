"""What every transport (local loop, LiveKit room) offers the MCP tools."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

from .converse_types import ConverseRequest, ConverseResult, ProgressCallback, TransportName


class TransportHealth(BaseModel):
    name: TransportName
    available: bool
    detail: str = ""


class Transport(Protocol):
    name: TransportName

    async def converse(self, request: ConverseRequest, progress: ProgressCallback) -> ConverseResult:
        """Speak `request.message`, then (if asked) return the user's reply. Raises VoiceError subclasses.

        `progress` does not raise (`VoiceService` guards it once); every per-call option in `request` is honoured,
        refused (`UnsupportedOption`) or listed in the result's `ignored_options`. `timings.total_ms` is left to
        `VoiceService`."""
        ...

    async def health(self) -> TransportHealth: ...

    async def aclose(self) -> None: ...
