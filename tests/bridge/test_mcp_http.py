"""The MCP server over streamable HTTP (`voice-mcp serve --http`), reached by the real `mcp` client."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from mcp import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def http_server(tmp_path: Path) -> AsyncIterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    env["VOICE_MCP_DATA_DIR"] = str(tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcp_bridge", "serve", "--http", "--host", "127.0.0.1", "--port", str(port),
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(60):
            while True:  # wait until it accepts connections
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                except OSError:
                    assert process.returncode is None, "the HTTP server exited at start"
                    await asyncio.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def test_streamable_http_serves_the_same_tools(http_server: str) -> None:
    async with Client(http_server) as client:
        tools = {tool.name for tool in (await client.list_tools()).tools}
        assert tools == {"converse", "voice_status", "create_join_link", "list_rooms", "room_status", "close_room"}
        result = await client.call_tool("converse", {"message": ""})
        assert result.is_error and "message is empty" in result.content[0].text
