"""Provider health for `voice-mcp doctor` and the `voice_status` tool: what is configured, what works, how to fix.

Checks are cheap and local: model packages installed, `espeak-ng` on PATH, an API key for `openai`, and a short
`GET <base>/models` (2 s) to configured OpenAI-compatible servers. Nothing is downloaded or loaded. OpenAI's own
host is only contacted with `probe_remote=True`.
"""

from __future__ import annotations

import asyncio
import importlib.resources
import importlib.util
from pathlib import Path
from typing import Literal

import aiohttp
from pydantic import BaseModel

from agent.config import Settings
from agent.package_info import install_command

from .errors import ProviderUnavailable
from .espeak_tts import ESPEAK_FIX, find_espeak
from .model_weights import BUNDLED_PIPER_VOICE, BUNDLED_WHISPER, OFFLINE_FIX, bundled_whisper_path, piper_voice_paths
from .openai_compat import OPENAI_KEY_FIX, is_url
from .piper_tts import require_piper

PROBE_TIMEOUT = 2.0
OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"


class ProviderStatus(BaseModel):
    role: Literal["stt", "tts", "vad"]
    name: str
    """The provider-list entry (`faster-whisper`, `piper`, `espeak`, `openai`, a URL) or `silero` for the VAD."""
    available: bool
    detail: str
    fix: str | None = None
    """What to do when not available (None when available)."""


def _status(role: Literal["stt", "tts", "vad"], name: str, problem: ProviderUnavailable) -> ProviderStatus:
    return ProviderStatus(role=role, name=name, available=False, detail=problem.problem, fix=problem.fix)


def _check_whisper(settings: Settings) -> ProviderStatus:
    name = "faster-whisper"
    if importlib.util.find_spec("faster_whisper") is None:
        return ProviderStatus(
            role="stt", name=name, available=False, detail="faster-whisper is not installed",
            fix=f"{install_command()}: faster-whisper is a dependency",
        )  # fmt: skip
    if settings.stt_model == BUNDLED_WHISPER:
        try:
            path = bundled_whisper_path()
        except ProviderUnavailable as exc:
            return _status("stt", name, exc)
        return ProviderStatus(role="stt", name=name, available=True, detail=f"Whisper tiny.en bundled at {path}")
    if Path(settings.stt_model).expanduser().is_dir():
        return ProviderStatus(role="stt", name=name, available=True, detail=f"model directory {settings.stt_model}")
    try:
        from faster_whisper.utils import download_model

        path_str = download_model(settings.stt_model, local_files_only=True)
    except Exception as exc:  # any failure means "not available without a download"
        return ProviderStatus(
            role="stt", name=name, available=False,
            detail=f"model {settings.stt_model!r} is not a directory or a cached faster-whisper model ({exc})",
            fix="run once with network access so faster-whisper can download it, set VOICE_MCP_STT_MODEL to a "
            f"model directory, or use the bundled {BUNDLED_WHISPER} ({OFFLINE_FIX})",
        )  # fmt: skip
    return ProviderStatus(role="stt", name=name, available=True, detail=f"model {settings.stt_model} at {path_str}")


def _check_piper(settings: Settings) -> ProviderStatus:
    try:
        require_piper()
    except ProviderUnavailable as exc:
        return _status("tts", "piper", exc)
    try:
        model, _ = piper_voice_paths(settings.tts_voice)
    except ProviderUnavailable as exc:
        return _status("tts", "piper", exc)
    what = "bundled voice" if settings.tts_voice == BUNDLED_PIPER_VOICE else "voice"
    return ProviderStatus(role="tts", name="piper", available=True, detail=f"{what} {model.name} at {model.parent}")


def _check_espeak() -> ProviderStatus:
    binary = find_espeak()
    if binary is None:
        return ProviderStatus(
            role="tts", name="espeak", available=False, detail="espeak-ng is not on PATH", fix=ESPEAK_FIX
        )
    return ProviderStatus(role="tts", name="espeak", available=True, detail=f"espeak-ng at {binary}")


def _check_vad() -> ProviderStatus:
    try:
        resource = importlib.resources.files("livekit.plugins.silero.resources") / "silero_vad.onnx"
        present = resource.is_file()
    except ModuleNotFoundError:
        present = False
    if not present:
        return ProviderStatus(
            role="vad", name="silero", available=False, detail="livekit-plugins-silero (with its model) is missing",
            fix=f"{install_command()}: livekit-plugins-silero is a dependency",
        )  # fmt: skip
    return ProviderStatus(role="vad", name="silero", available=True, detail="Silero VAD model bundled with the plugin")


async def probe_models_endpoint(base_url: str, api_key: str | None) -> tuple[bool, str]:
    """GET <base>/models with a short timeout: (server reachable and not failing, description)."""
    url = base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT)) as session,
            session.get(url, headers=headers) as response,
        ):
            status = response.status
    except TimeoutError:
        return False, f"{url} did not answer within {PROBE_TIMEOUT:g} s"
    except aiohttp.ClientError as exc:
        return False, f"cannot reach {url}: {exc}"
    if status in (401, 403):
        return False, f"{url} refused the API key (HTTP {status})"
    if status >= 500:
        return False, f"{url} answered HTTP {status}"
    # a 404 (e.g. whisper.cpp has no /models) still shows the server is up, which is what matters here
    return True, f"server reachable ({url}: HTTP {status})"


async def _check_openai_like(
    role: Literal["stt", "tts"], entry: str, settings: Settings, probe_remote: bool
) -> ProviderStatus:
    variable = f"VOICE_MCP_{role.upper()}"
    if is_url(entry):
        ok, detail = await probe_models_endpoint(entry, settings.openai_api_key)
        fix = None if ok else f"start the OpenAI-compatible server at {entry}, or remove it from {variable}"
        return ProviderStatus(role=role, name=entry, available=ok, detail=detail, fix=fix)
    if not settings.openai_api_key:
        return ProviderStatus(
            role=role, name=entry, available=False, detail="no API key configured", fix=OPENAI_KEY_FIX
        )
    base = settings.openai_base_url
    if base is None and not probe_remote:
        return ProviderStatus(role=role, name=entry, available=True, detail="API key set (OpenAI not contacted)")
    ok, detail = await probe_models_endpoint(base or OPENAI_DEFAULT_BASE, settings.openai_api_key)
    fix = None if ok else "check VOICE_MCP_OPENAI_BASE_URL, the API key and the network"
    return ProviderStatus(role=role, name=entry, available=ok, detail=detail, fix=fix)


async def check_providers(settings: Settings, *, probe_remote: bool = False) -> list[ProviderStatus]:
    """Status of every configured provider (STT then TTS in failover order, then the VAD)."""

    async def stt_status(entry: str) -> ProviderStatus:
        if entry == "faster-whisper":
            return await asyncio.to_thread(_check_whisper, settings)
        return await _check_openai_like("stt", entry, settings, probe_remote)

    async def tts_status(entry: str) -> ProviderStatus:
        if entry == "piper":
            return await asyncio.to_thread(_check_piper, settings)  # imports piper-tts once
        if entry == "espeak":
            return _check_espeak()
        return await _check_openai_like("tts", entry, settings, probe_remote)

    results = await asyncio.gather(*(stt_status(e) for e in settings.stt), *(tts_status(e) for e in settings.tts))
    return [*results, _check_vad()]
