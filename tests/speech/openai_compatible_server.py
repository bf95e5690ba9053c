"""A real OpenAI-compatible speech server on 127.0.0.1 for tests, backed by our embedded models.

`/v1/audio/transcriptions` transcribes with faster-whisper, `/v1/audio/speech` speaks with Piper, so clients see
real text and real audio, exactly as from Whisper.cpp / Speaches / Kokoro-FastAPI. It stands in for cloud and
local servers; it is not a mock of our code. Reusable:

    async with OpenAICompatibleServer(stt=FasterWhisperSTT(), tts=PiperTTS()) as server:
        settings = load_settings(stt=[server.base_url], tts=[server.base_url])
        ...
        server.fail_with = 500          # every audio request now answers 500 (a broken server)
        server.fail_next = 1            # only the next audio request answers 500 (a passing hiccup)
        server.hold = asyncio.Event()   # transcription requests now wait (a stalled server) until it is set
        server.requests                 # [(method, path), ...] in arrival order
        server.auth_headers             # Authorization headers received

`closed_port_url()` gives the base URL of a loopback port nobody listens on (connection refused);
`SilentServer` accepts connections, reads the requests and never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import wave
from dataclasses import dataclass, field

import numpy as np
from aiohttp import web

from agent.speech import FasterWhisperSTT, PiperTTS
from agent.speech.audio import WHISPER_SAMPLE_RATE, resample_int16

OPENAI_PCM_RATE = 24000  # response_format=pcm is 24 kHz 16-bit mono in OpenAI's API


def closed_port_url() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class SilentServer:
    """A loopback server that accepts every connection, reads what it is sent and never answers."""

    def __init__(self) -> None:
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/v1"

    async def _hold(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        with contextlib.suppress(ConnectionError):
            while await reader.read(65536):
                pass

    async def __aenter__(self) -> SilentServer:
        self._server = await asyncio.start_server(self._hold, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(np.ascontiguousarray(samples, dtype=np.int16).tobytes())
    return out.getvalue()


def read_wav_mono16k(data: bytes) -> np.ndarray:
    """Float32 16 kHz mono samples from 16-bit PCM WAV bytes."""
    with wave.open(io.BytesIO(data), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError("only 16-bit PCM WAV is supported")
        channels, rate = wav.getnchannels(), wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return resample_int16(samples, rate, WHISPER_SAMPLE_RATE).astype(np.float32) / 32768.0


@dataclass
class OpenAICompatibleServer:
    stt: FasterWhisperSTT | None = None
    tts: PiperTTS | None = None
    host: str = "127.0.0.1"
    fail_with: int | None = None
    fail_next: int = 0
    hold: asyncio.Event | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def __aenter__(self) -> OpenAICompatibleServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application(middlewares=[self._record], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/audio/transcriptions", self._transcriptions)
        app.router.add_post("/v1/audio/speech", self._speech)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _record(self, request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        self.requests.append((request.method, request.path))
        self.auth_headers.append(request.headers.get("Authorization", ""))
        if self.hold is not None and request.path.endswith("/transcriptions"):
            await self.hold.wait()  # then answers as configured now (fail_with set meanwhile: that error)
        hiccup = self.fail_next > 0 and request.path.startswith("/v1/audio/")
        if hiccup:
            self.fail_next -= 1
        if hiccup or (self.fail_with is not None and request.path.startswith("/v1/audio/")):
            return web.json_response(
                {"error": {"message": "simulated failure", "type": "server_error"}}, status=self.fail_with
            )
        return await handler(request)

    async def _models(self, request: web.Request) -> web.Response:
        models = [m for m, on in (("whisper-1", self.stt), ("tts-1", self.tts)) if on is not None]
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

    async def _transcriptions(self, request: web.Request) -> web.Response:
        if self.stt is None:
            raise web.HTTPNotFound()
        form = await request.post()
        upload = form.get("file")
        if not isinstance(upload, web.FileField):
            return web.json_response({"error": {"message": "file is required"}}, status=400)
        try:
            audio = read_wav_mono16k(upload.file.read())
        except (wave.Error, ValueError, EOFError) as exc:
            return web.json_response({"error": {"message": f"unreadable audio: {exc}"}}, status=400)
        language = str(form.get("language") or "") or None
        result = await self.stt.transcribe(audio, language=language)
        if form.get("response_format") == "verbose_json":
            return web.json_response(
                {
                    "task": "transcribe",
                    "language": result.language,
                    "duration": result.audio_duration,
                    "text": result.text,
                    "segments": [],
                }
            )
        return web.json_response({"text": result.text})

    async def _speech(self, request: web.Request) -> web.Response:
        if self.tts is None:
            raise web.HTTPNotFound()
        body = await request.json()
        text = str(body.get("input", ""))
        if not text.strip():
            return web.json_response({"error": {"message": "input is required"}}, status=400)
        speaker = PiperTTS(voice=self.tts.model, speed=float(body.get("speed") or 1.0))
        frame = await speaker.synthesize(text).collect()
        samples = np.frombuffer(frame.data, dtype=np.int16)
        if body.get("response_format") == "pcm":
            pcm = resample_int16(samples, frame.sample_rate, OPENAI_PCM_RATE)
            return web.Response(body=pcm.tobytes(), content_type="audio/pcm")
        # wav for "wav" and, like many local servers, for formats it cannot encode (mp3, opus, ...)
        return web.Response(body=wav_bytes(samples, frame.sample_rate), content_type="audio/wav")
