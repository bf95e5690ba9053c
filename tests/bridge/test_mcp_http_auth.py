"""`voice-mcp serve --http` off loopback needs a bearer token and checks Host/Origin; on loopback the token is
honoured when set. Real server processes, the real MCP client."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

NETNS_ADDRESS = "10.213.7.1"  # lkns0, made by tests/netns/run


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    return env | {"VOICE_MCP_DATA_DIR": str(data_dir)} | extra


@asynccontextmanager
async def serve_http(data_dir: Path, host: str, **extra: str) -> AsyncIterator[tuple[str, Path]]:
    port = free_port(host)
    log = data_dir / f"serve-{port}.log"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcp_bridge", "serve", "--http", "--host", host, "--port", str(port),
        cwd=data_dir, env=server_env(data_dir, **extra), stdout=log.open("wb"), stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(300):  # a busy shared machine can take long to import the stack
            while True:
                try:
                    _, writer = await asyncio.open_connection(host, port)
                    writer.close()
                    break
                except OSError:
                    assert process.returncode is None, f"the HTTP server exited at start:\n{log.read_text()}"
                    await asyncio.sleep(0.2)
        yield f"http://{host}:{port}/mcp", log
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def tool_names(url: str, token: str | None) -> set[str]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    transport = streamable_http_client(url, http_client=create_mcp_http_client(headers=headers))
    async with Client(transport) as client:
        return {tool.name for tool in (await client.list_tools()).tools}


async def status_without_mcp(url: str, **headers: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    accept = {"Accept": "application/json, text/event-stream"}
    async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=accept | headers) as answer:
        return answer.status


async def test_loopback_honours_a_configured_token(tmp_path: Path) -> None:
    token = "a-loopback-token-of-at-least-32-characters"
    async with serve_http(tmp_path, "127.0.0.1", VOICE_MCP_HTTP_TOKEN=token) as (url, _):
        assert await status_without_mcp(url) == 401
        assert await status_without_mcp(url, Authorization="Bearer wrong") == 401
        assert "converse" in await tool_names(url, token)


async def test_a_wildcard_bind_without_an_allow_list_refuses_to_start(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcp_bridge", "serve", "--http", "--host", "0.0.0.0", "--port", str(free_port()),
        cwd=tmp_path, env=server_env(tmp_path), stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 2
    assert b"[unsafe_http]" in err and b"VOICE_MCP_HTTP_ALLOWED_HOSTS" in err


async def test_a_short_token_is_a_configuration_error(tmp_path: Path) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcp_bridge", "serve", "--http", cwd=tmp_path,
        env=server_env(tmp_path, VOICE_MCP_HTTP_TOKEN="short"), stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 2 and b"VOICE_MCP_HTTP_TOKEN" in err


@pytest.fixture
def network_address() -> str:
    if any(name == "lkns0" for _, name in socket.if_nameindex()):
        return NETNS_ADDRESS
    message = "binding a non-loopback address needs the private network namespace: run via tests/netns/run"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


async def test_off_loopback_a_token_is_generated_once_and_required(tmp_path: Path, network_address: str) -> None:
    async with serve_http(tmp_path, network_address) as (url, log):
        stored = (tmp_path / "http-token").read_text().strip()
        assert oct((tmp_path / "http-token").stat().st_mode & 0o777) == "0o600"
        assert stored in log.read_text()  # printed once, at generation
        assert await status_without_mcp(url) == 401
        assert "converse" in await tool_names(url, stored)
        # Host and Origin allow-lists apply as well (DNS rebinding): a foreign Host or Origin is refused
        auth = f"Bearer {stored}"
        assert await status_without_mcp(url, Authorization=auth, Host="evil.example:80") in (400, 421)
        assert await status_without_mcp(url, Authorization=auth, Origin="http://evil.example") == 403
    async with serve_http(tmp_path, network_address) as (url, log):
        assert stored not in log.read_text()  # the second start reuses it silently
        assert "converse" in await tool_names(url, stored)
