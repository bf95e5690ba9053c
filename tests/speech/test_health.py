"""check_providers: clear, actionable status for `voice-mcp doctor` / `voice_status`."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.speech.health import ProviderStatus, check_providers
from tests.speech_fixtures import clean_settings

from .openai_compatible_server import OpenAICompatibleServer, closed_port_url


def by_name(statuses: list[ProviderStatus]) -> dict[tuple[str, str], ProviderStatus]:
    return {(s.role, s.name): s for s in statuses}


async def test_default_embedded_setup_is_healthy() -> None:
    statuses = await check_providers(clean_settings())

    assert [(s.role, s.name) for s in statuses] == [
        ("stt", "faster-whisper"),
        ("tts", "piper"),
        ("tts", "espeak"),
        ("vad", "silero"),
    ]
    assert all(s.available and s.fix is None for s in statuses), statuses
    assert "tiny.en" in statuses[0].detail


async def test_missing_espeak_unreachable_url_and_missing_key_come_with_fixes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = closed_port_url()
    monkeypatch.setenv("PATH", str(tmp_path))  # espeak-ng not on PATH
    settings = clean_settings(stt=[dead, "openai"], tts=["openai", "espeak"])

    status = by_name(await check_providers(settings))

    espeak = status[("tts", "espeak")]
    assert not espeak.available and espeak.fix and "apt-get install espeak-ng" in espeak.fix
    url = status[("stt", dead)]
    assert not url.available and "cannot reach" in url.detail
    assert url.fix and dead in url.fix and "VOICE_MCP_STT" in url.fix
    for role in ("stt", "tts"):
        key = status[(role, "openai")]
        assert not key.available and key.fix and "OPENAI_API_KEY" in key.fix


async def test_reachable_server_and_failing_server(openai_server: OpenAICompatibleServer) -> None:
    async with OpenAICompatibleServer(fail_with=None) as empty:
        settings = clean_settings(stt=[openai_server.base_url], tts=[empty.base_url, "piper"])
        # a server without speech models still answers /models: reachable
        status = by_name(await check_providers(settings))
    assert status[("stt", openai_server.base_url)].available
    assert status[("tts", empty.base_url)].available
    assert ("GET", "/v1/models") in openai_server.requests


async def test_openai_kind_with_configured_base_url_is_probed(openai_server: OpenAICompatibleServer) -> None:
    settings = clean_settings(stt=["openai"], tts=["piper"], openai_base_url=openai_server.base_url, openai_api_key="k")
    status = by_name(await check_providers(settings))
    assert status[("stt", "openai")].available
    assert openai_server.auth_headers[-1] == "Bearer k"


async def test_missing_piper_voice_and_whisper_model(tmp_path: Path) -> None:
    settings = clean_settings(stt_model=str(tmp_path / "no-such-model"), tts_voice=str(tmp_path / "voice.onnx"))
    status = by_name(await check_providers(settings))

    whisper = status[("stt", "faster-whisper")]
    assert not whisper.available and whisper.fix and "VOICE_MCP_STT_MODEL" in whisper.fix
    piper = status[("tts", "piper")]
    assert not piper.available and piper.fix and "VOICE_MCP_TTS_VOICE" in piper.fix
