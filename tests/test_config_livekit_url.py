"""LIVEKIT_URL is checked when the settings are read, not when the first call tries to join a room."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_settings


@pytest.mark.parametrize(
    "value", ["garbage", "ws://", "ftp://example.com", "127.0.0.1:7880", "wss:///path-only", "ws://host:port"]
)
def test_a_livekit_url_that_cannot_be_a_server_is_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("LIVEKIT_URL", value)
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file=None)
    assert caught.value.variable == "LIVEKIT_URL"
    assert "ws://, wss://, http:// or https://" in str(caught.value)
    assert repr(value) in str(caught.value)
    assert "Fix:" in str(caught.value) and "ws://127.0.0.1:7880" in caught.value.fix


@pytest.mark.parametrize(
    "value",
    ["ws://127.0.0.1:7880", "wss://my-project.livekit.cloud", "http://localhost:7880", "https://lk.example.org/"],
)
def test_server_urls_are_accepted(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LIVEKIT_URL", value)
    assert load_settings(env_file=None).livekit_url == value


def test_an_empty_livekit_url_means_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEKIT_URL", "  ")
    settings = load_settings(env_file=None, livekit_api_key="k", livekit_api_secret="s")
    assert settings.livekit_url is None and not settings.livekit_configured


def test_the_worker_refuses_to_start_with_a_bad_livekit_url(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LIVEKIT_URL": "garbage", "PYTHONPATH": str(repo)}
    done = subprocess.run(
        [sys.executable, "-m", "agent", "start"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert "LIVEKIT_URL" in done.stderr and "garbage" in done.stderr, done.stderr
