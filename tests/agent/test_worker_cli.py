"""`python -m agent`: our own help text, and a worker console without livekit's banners, DEBUG lines or warnings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.lkserver.fixtures import LiveKitServerProcess

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    return env | {"PYTHONPATH": str(ROOT), **extra}


def test_help_describes_our_commands_only(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--help"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    for command in ("start", "dev", "console"):
        assert f"    {command} " in done.stdout
    assert "joins the room it is dispatched to" in done.stdout
    assert "download-files" not in done.stdout and "connect" not in done.stdout.split("positional arguments")[1]


def test_unknown_command_is_refused_with_usage(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "download-files"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "invalid choice: 'download-files'" in done.stderr


@pytest.mark.livekit
def test_dev_worker_registers_and_stops_quietly(livekit_server: LiveKitServerProcess, tmp_path: Path) -> None:
    """`python -m agent dev`: readable INFO logs, no deprecation banner, no DEBUG lines, a clean exit on Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "dev"], cwd=tmp_path, env=_env(**livekit_server.env()),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    registered = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "registered worker" in line:
                registered.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert registered.wait(180), "".join(lines)[-3000:]
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, "".join(lines)[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    reader.join(10)
    output = "".join(lines)
    assert "INFO" in output and "registered worker" in output
    for noise in ("deprecated", "DEBUG", "never awaited", "Traceback"):
        assert noise not in output, output[-3000:]
