"""The bridge's voice service: owns the shared speech providers and the transports, picks one per call.

The MCP tools and the CLI both talk to this class; neither knows how a transport works.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from pydantic import BaseModel

from agent.config import Settings
from agent.speech.health import ProviderStatus

from .cancel_safe import finish
from .converse_types import (
    Busy,
    ConverseRequest,
    ConverseResult,
    ProgressCallback,
    RequestedTransport,
    Stage,
    guarded,
    no_progress,
)
from .exchange_log import ExchangeLog
from .transport_interface import Transport, TransportHealth

if TYPE_CHECKING:
    from livekit.agents import stt, tts, vad

    from .livekit import LiveKitTransport

logger = logging.getLogger(__name__)

class StatusReport(BaseModel):
    providers: list[ProviderStatus]
    transports: list[TransportHealth]
    settings: dict[str, object]


class VoiceService:
    """Builds the speech providers and transports on first use and closes them in `aclose()` (the MCP server's
    lifespan, or the CLI, owns the service)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.exchange_log = ExchangeLog.in_dir(settings.data_dir, settings.exchange_log)
        self._stt: stt.STT | None = None
        self._tts: tts.TTS | None = None
        self._vad: vad.VAD | None = None
        self._local: Transport | None = None
        self._livekit: LiveKitTransport | None = None
        self._lock = asyncio.Lock()

    # --- providers and transports, built once on first use --------------------------------------------------
    def speech(self) -> tuple[stt.STT, tts.TTS, vad.VAD]:
        from agent.speech import build_stt, build_tts, build_vad

        if self._vad is None:
            self._vad = build_vad(self.settings)
        if self._stt is None:
            self._stt = build_stt(self.settings, vad=self._vad)
        if self._tts is None:
            self._tts = build_tts(self.settings)
        return self._stt, self._tts, self._vad

    def local_transport(self) -> Transport:
        if self._local is None:
            from .local import build_local_transport

            stt_, tts_, vad_ = self.speech()
            self._local = build_local_transport(self.settings, stt=stt_, tts=tts_, vad=vad_)
        return self._local

    def livekit_transport(self) -> LiveKitTransport | None:
        if not self.settings.livekit_configured:
            return None
        if self._livekit is None:
            from .livekit import LiveKitTransport

            self._livekit = LiveKitTransport(self.settings)
        return self._livekit

    async def prewarm(self) -> None:
        """Join the room and load the speech models in the background, so the first converse does not pay for it."""
        livekit = self.livekit_transport()
        if livekit is not None:
            livekit.start()  # joins and dispatches a worker in the background; failures surface per call
        building = asyncio.ensure_future(asyncio.to_thread(self.speech))
        try:
            try:
                stt_, tts_, _ = await asyncio.shield(building)
            except asyncio.CancelledError:
                # building only constructs the objects (models load lazily): let it finish, so that aclose()
                # sees, and closes, everything it made
                with contextlib.suppress(Exception):
                    await building
                raise
            stt_.prewarm()
            tts_.prewarm()
        except Exception as exc:  # a broken provider is reported by converse and voice_status, not here
            logger.warning("could not prewarm the speech providers: %s", exc)

    async def choose(self, requested: RequestedTransport) -> tuple[Transport, str]:
        from .transport_choice import choose_transport

        return await choose_transport(
            requested, self.settings, livekit=self.livekit_transport(), local_factory=self.local_transport
        )

    # --- the calls the tools make -----------------------------------------------------------------------------
    async def converse(
        self,
        request: ConverseRequest,
        transport: RequestedTransport = "auto",
        progress: ProgressCallback = no_progress,
    ) -> ConverseResult:
        started = time.perf_counter()
        progress = guarded(progress)  # the one place a failing progress sink is contained
        try:
            await self._wait_for_turn(progress)
            try:  # one conversation at a time: there is one microphone and one user
                chosen, reason = await self.choose(transport)
                result = await chosen.converse(request, progress)
            finally:
                self._lock.release()
        except BaseException as exc:
            await finish(
                self.exchange_log.record(requested_transport=transport, message_chars=len(request.message), error=exc)
            )
            raise
        result.transport_reason = result.transport_reason or reason
        result.timings.total_ms = round((time.perf_counter() - started) * 1000, 1)  # the only place it is set
        await finish(
            self.exchange_log.record(requested_transport=transport, message_chars=len(request.message), result=result)
        )
        return result

    async def _wait_for_turn(self, progress: ProgressCallback) -> None:
        """Take the one-call-at-a-time lock; a call that must wait says so and waits at most `busy_wait` seconds."""
        if not self._lock.locked():
            await self._lock.acquire()
            return
        wait = self.settings.busy_wait
        await progress(Stage.WAITING, f"waiting for the previous call to finish (up to {wait:g} s)")
        try:
            async with asyncio.timeout(wait):
                await self._lock.acquire()
        except TimeoutError:
            raise Busy(
                f"Another converse call has held the microphone and speaker for longer than {wait:g} s",
                "Calls run one at a time: wait for the previous call to return (or cancel it) and call again. "
                "VOICE_MCP_BUSY_WAIT sets how long a call waits for its turn.",
            ) from None

    async def status(self) -> StatusReport:
        from agent.speech import check_providers

        providers = await check_providers(self.settings)
        transports: list[TransportHealth] = []
        try:
            transports.append(await self.local_transport().health())
        except Exception as exc:
            transports.append(TransportHealth(name="local", available=False, detail=str(exc)))
        livekit = self.livekit_transport()
        if livekit is None:
            transports.append(
                TransportHealth(
                    name="livekit",
                    available=False,
                    detail="not configured: set LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
                )
            )
        else:
            try:
                transports.append(await livekit.health())
            except Exception as exc:
                transports.append(TransportHealth(name="livekit", available=False, detail=str(exc)))
        return StatusReport(providers=providers, transports=transports, settings=self.public_settings())

    def public_settings(self) -> dict[str, object]:
        """The settings worth showing a user; secrets are never included."""
        s = self.settings
        return {
            "stt": s.stt,
            "tts": s.tts,
            "stt_model": s.stt_model,
            "tts_voice": s.tts_voice,
            "input_device": s.input_device,
            "output_device": s.output_device,
            "livekit_url": s.livekit_url,
            "room": s.room,
            "agent_name": s.agent_name,
            "data_dir": str(s.data_dir),
        }

    async def aclose(self) -> None:
        """Close the transports, then the speech providers this service built (in that order: the transports use
        them)."""
        for transport in (self._livekit, self._local):
            if transport is not None:
                try:
                    await transport.aclose()
                except Exception as exc:
                    logger.warning("closing %s transport failed: %s", transport.name, exc)
        self._livekit = self._local = None
        await wait_for_model_loads()  # a model still loading on its thread must not be closed under it
        built: list[stt.STT | tts.TTS | vad.VAD | None] = [self._stt, self._tts, self._vad]
        self._stt = self._tts = self._vad = None
        for component in built:
            close = getattr(component, "aclose", None)  # livekit's VAD has no aclose (nothing to release)
            if close is None:
                continue
            try:
                await close()
            except Exception as exc:
                logger.warning("closing %s failed: %s", type(component).__name__, exc)


MODEL_LOAD_GRACE = 120.0
"""Seconds shutdown waits for a model still loading (the process must not exit under a native loader)."""


async def wait_for_model_loads() -> None:
    from agent.speech.model_weights import wait_for_loads

    if not await asyncio.to_thread(wait_for_loads, MODEL_LOAD_GRACE):
        logger.warning("a speech model was still loading after %.0f s; exiting anyway", MODEL_LOAD_GRACE)
