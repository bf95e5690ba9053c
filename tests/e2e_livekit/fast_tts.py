"""A fast OpenAI-compatible TTS server for the 50 kB message test: every request gets 40 ms of quiet tone.

Speaking 50 kB with Piper takes most of an hour, so this one test points the worker's real livekit-agents TTS
(`livekit.plugins.openai.TTS`, the `VOICE_MCP_TTS=<url>` provider) at this server. It records every text it was
asked to speak, which is what shows the message crossed the room intact.
"""

from __future__ import annotations

import numpy as np
from aiohttp import web

from tests.speech.openai_compatible_server import wav_bytes

from .harness import free_port

RATE = 24000


class FastTTSServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.inputs: list[str] = []
        self._runner: web.AppRunner | None = None
        t = np.arange(int(RATE * 0.04)) / RATE
        self._audio = wav_bytes((np.sin(2 * np.pi * 440 * t) * 2000).astype(np.int16), RATE)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def _speech(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.inputs.append(str(body.get("input", "")))
        return web.Response(body=self._audio, content_type="audio/wav")

    async def __aenter__(self) -> FastTTSServer:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.add_routes([web.post("/v1/audio/speech", self._speech)])
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
