"""The loopback LiveKit server: one aiohttp application wiring signalling, agents and Twirp."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from . import cors
from .agents import AgentService
from .auth import KeyStore
from .rooms import RoomManager
from .signalling import SignallingService
from .twirp import TwirpService

log = logging.getLogger("lkserver")


@dataclass(frozen=True)
class ServerOptions:
    host: str = "127.0.0.1"
    port: int = 7880
    keys: tuple[tuple[str, str], ...] = (("devkey", "secret"),)
    # False: answer 404 on /rtc/v1 like a server without single-peer-connection support, so
    # that clients fall back to /rtc with two peer connections.
    single_pc: bool = True
    # True: announce every participant with client_protocol 0, so SDKs use RPC v1 between them.
    legacy_protocol: bool = False


class LiveKitServer:
    """Start with ``await server.start()``, stop with ``await server.stop()``."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.keys = KeyStore(dict(options.keys))
        self.rooms = RoomManager()
        self.signalling = SignallingService(
            self.keys, self.rooms, single_pc=options.single_pc, legacy_protocol=options.legacy_protocol
        )
        self.agents = AgentService(self.keys, self.rooms)
        self.twirp = TwirpService(self.keys, self.rooms, self.agents)
        self.app = web.Application()
        self.app.add_routes(
            [web.get("/", self._health), *self.signalling.routes(), *self.agents.routes(), *self.twirp.routes()]
        )
        cors.install(self.app)  # browsers on another origin read validate and call Twirp
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.options.host}:{self.options.port}"

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def start(self) -> None:
        self.rooms.start()
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.options.host, self.options.port)
        await site.start()

    async def stop(self) -> None:
        await self.rooms.stop()
        if self._runner is not None:
            await self._runner.cleanup()
