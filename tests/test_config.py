"""Configuration: defaults, parsing, and errors that name the variable and the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("VOICE_MCP_", "LIVEKIT_")) or name == "OPENAI_API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # nor the developer's own settings


def test_defaults_are_the_embedded_offline_stack() -> None:
    settings = load_settings()
    assert settings.stt == ["faster-whisper"]
    assert settings.tts == ["piper", "espeak"]
    assert settings.stt_model == "tiny.en"
    assert not settings.livekit_configured


def test_provider_lists_accept_aliases_and_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_MCP_STT", " http://127.0.0.1:2022/v1/ , embedded")
    monkeypatch.setenv("VOICE_MCP_TTS", "OpenAI,local,espeak")
    settings = load_settings()
    assert settings.stt == ["http://127.0.0.1:2022/v1", "faster-whisper"]
    assert settings.tts == ["openai", "piper", "espeak"]


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("VOICE_MCP_SILENCE_MS=1500\nLIVEKIT_URL=ws://127.0.0.1:7880\n")
    settings = load_settings()
    assert settings.silence_ms == 1500
    assert settings.livekit_url == "ws://127.0.0.1:7880"


def test_user_config_env_file_is_read_and_the_working_directory_wins(tmp_path: Path) -> None:
    """An MCP client starts the server in a directory of its choosing: the user's own file is read from anywhere."""
    user_file = tmp_path / "config" / "voice-mcp" / ".env"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("VOICE_MCP_SILENCE_MS=1700\nVOICE_MCP_ROOM=from-user-config\n")
    settings = load_settings()
    assert (settings.silence_ms, settings.room) == (1700, "from-user-config")
    (tmp_path / ".env").write_text("VOICE_MCP_SILENCE_MS=900\n")
    settings = load_settings()
    assert (settings.silence_ms, settings.room) == (900, "from-user-config")


def test_doctor_says_which_env_files_it_read(tmp_path: Path) -> None:
    user_file = tmp_path / "config" / "voice-mcp" / ".env"
    user_file.parent.mkdir(parents=True)
    user_file.write_text("VOICE_MCP_SILENCE_MS=1700\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    done = subprocess.run(
        [sys.executable, "-m", "mcp_bridge", "doctor"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert f"Configuration files read: {user_file}" in done.stdout
    (tmp_path / ".env").write_text("VOICE_MCP_SILENCE_MS=900\n")
    done = subprocess.run(
        [sys.executable, "-m", "mcp_bridge", "doctor"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=300,
    )
    assert f"Configuration files read: {user_file}, {tmp_path / '.env'} (the later wins)" in done.stdout


@pytest.mark.parametrize(
    ("variable", "value", "expected_in_message"),
    [
        ("VOICE_MCP_TTS", "bogus", "unknown provider 'bogus'"),
        ("VOICE_MCP_LISTEN_MAX", "abc", "valid number"),
        ("VOICE_MCP_VAD_AGGRESSIVENESS", "7", "less than or equal to 3"),
        ("VOICE_MCP_STT", " , ", "at least one STT provider"),
    ],
)
def test_invalid_values_name_the_variable_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected_in_message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == variable
    assert expected_in_message in str(caught.value)
    assert "Fix:" in str(caught.value)


def test_inconsistent_listen_bounds_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICE_MCP_LISTEN_MAX", "1")
    monkeypatch.setenv("VOICE_MCP_LISTEN_MIN", "5")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.variable == "VOICE_MCP_LISTEN_MIN"


def test_cli_refuses_bad_configuration_at_start(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "VOICE_MCP_SILENCE_MS": "-5"}
    done = subprocess.run(
        [sys.executable, "-m", "mcp_bridge", "doctor"], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "VOICE_MCP_SILENCE_MS" in done.stderr
    assert "Traceback" not in done.stderr
