"""`voice-mcp web` as a real process on a free loopback port, with its own data dir (where the codes live)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SECRET = "web-test-secret-that-must-never-leave-the-service"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class WebService:
    url: str
    data_dir: Path
    env: dict[str, str]
    log: Path

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mcp_bridge", *args]


def service_env(data_dir: Path, livekit_url: str, api_key: str, api_secret: str, room: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    env |= {
        "LIVEKIT_URL": livekit_url,
        "LIVEKIT_API_KEY": api_key,
        "LIVEKIT_API_SECRET": api_secret,
        "VOICE_MCP_ROOM": room,
        "VOICE_MCP_DATA_DIR": str(data_dir),
        "PYTHONPATH": str(REPO),
        "PYTHONUNBUFFERED": "1",
    }
    return env


async def start_web(env: dict[str, str], data_dir: Path) -> tuple[asyncio.subprocess.Process, WebService]:
    port = free_port()
    log = data_dir / f"web-{port}.log"
    env = env | {"VOICE_MCP_WEB_PORT": str(port)}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcp_bridge", "web", "--port", str(port), cwd=data_dir, env=env,
        stdout=log.open("wb"), stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(300):  # a busy shared machine can take long to import the stack
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                assert process.returncode is None, f"voice-mcp web exited:\n{log.read_text()}"
                await asyncio.sleep(0.1)
    return process, WebService(f"http://127.0.0.1:{port}", data_dir, env, log)


async def stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def run_cli(service: WebService, *args: str) -> tuple[int, str, str]:
    """`voice-mcp ARGS` with the service's settings: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        *service.cli(*args), cwd=service.data_dir, env=service.env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()
