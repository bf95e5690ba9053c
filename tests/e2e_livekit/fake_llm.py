"""An OpenAI-compatible chat completions server for the worker-LLM test: always streams one fixed answer.

It stands in for any local LLM server (llama.cpp, Ollama, vLLM …) behind `livekit.plugins.openai.LLM`, and records
the conversations it was sent.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from .harness import free_port

ANSWER = "This is the local assistant. I will pass that on."


class FakeChatServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def user_messages(self) -> list[str]:
        found = []
        for request in self.requests:
            for message in request.get("messages", []):
                if message.get("role") == "user":
                    content = message.get("content")
                    found.append(content if isinstance(content, str) else json.dumps(content))
        return found

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()), "model": "fake"}
        words = ANSWER.split(" ")
        for i, word in enumerate(words):
            delta: dict[str, Any] = {"content": word + (" " if i < len(words) - 1 else "")}
            if i == 0:
                delta["role"] = "assistant"
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        done = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        usage = {**base, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}}
        await response.write(f"data: {json.dumps(done)}\n\ndata: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())
        await response.write_eof()
        return response

    async def __aenter__(self) -> FakeChatServer:
        app = web.Application()
        app.add_routes([web.post("/v1/chat/completions", self._chat)])
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
