"""Append-only JSONL record of every converse exchange: timings, transport, providers and errors — never audio."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .converse_types import ConverseResult, VoiceError

logger = logging.getLogger(__name__)

LOG_NAME = "exchanges.jsonl"


class ExchangeLog:
    """One line per exchange. Write failures are logged, never raised: a log must not cost the user a reply."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path = path
        self.enabled = enabled
        self._lock = asyncio.Lock()

    @classmethod
    def in_dir(cls, data_dir: Path, enabled: bool = True) -> ExchangeLog:
        return cls(data_dir / LOG_NAME, enabled)

    async def record(
        self,
        *,
        requested_transport: str,
        message_chars: int,
        result: ConverseResult | None = None,
        error: BaseException | None = None,
    ) -> None:
        if not self.enabled:
            return
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "requested_transport": requested_transport,
            "message_chars": message_chars,
            "ok": error is None,
        }
        if result is not None:
            entry |= {
                "transport": result.transport,
                "transport_reason": result.transport_reason,
                "stt_provider": result.stt_provider,
                "tts_provider": result.tts_provider,
                "heard_speech": result.heard_speech,
                "reply_chars": len(result.text),
                "interrupted": result.interrupted,
                "ended_by": result.ended_by,
                "ignored_options": result.ignored_options,
                "timings": result.timings.model_dump(),
            }
        if error is not None:
            entry["error"] = {
                "code": error_code(error),
                "type": type(error).__name__,
                "message": str(error),
            }
        line = json.dumps(entry, default=str) + "\n"
        async with self._lock:
            try:
                await asyncio.to_thread(self._append, line)
            except OSError as exc:
                logger.warning("could not append to the exchange log %s: %s", self.path, exc)

    def _append(self, line: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line)


def error_code(error: BaseException) -> str:
    """The `[code]` of a failed exchange: the VoiceError's own, `cancelled` when the client cancelled the call."""
    if isinstance(error, VoiceError):
        return error.code
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    return "internal"


def read_entries(path: Path) -> list[dict[str, Any]]:
    """Every well-formed entry of a log; a torn last line (a crash mid-write) is skipped."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return entries
