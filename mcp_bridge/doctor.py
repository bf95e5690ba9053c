"""`voice-mcp doctor`: check devices, providers, models and configuration, and say what to fix."""

from __future__ import annotations

import sys
from typing import TextIO

from agent.config import Settings, default_env_files, user_env_file

from .service import StatusReport, VoiceService

OK = "ok"
FAIL = "FAIL"


def verdict(report: StatusReport) -> list[str]:
    """What stops voice-mcp from working at all; empty when it can hold a conversation."""
    problems = []
    for role in ("stt", "tts"):
        mine = [p for p in report.providers if p.role == role]
        if mine and not any(p.available for p in mine):
            problems.append(f"no {role.upper()} provider works")
    if not any(t.available for t in report.transports):
        problems.append("no transport works (no audio devices and no LiveKit)")
    return problems


def print_report(report: StatusReport, out: TextIO) -> None:
    print("Speech providers (in failover order):", file=out)
    for p in report.providers:
        mark = OK if p.available else FAIL
        print(f"  [{mark:4}] {p.role:4} {p.name}: {p.detail}", file=out)
        if not p.available and p.fix:
            print(f"         fix: {p.fix}", file=out)
    print("Transports:", file=out)
    for t in report.transports:
        mark = OK if t.available else FAIL
        print(f"  [{mark:4}] {t.name}: {t.detail}", file=out)
    files = [str(path.resolve()) for path in default_env_files()]
    if files:
        later = " (the later wins)" if len(files) > 1 else ""
        print(f"Configuration files read: {', '.join(files)}{later}; the environment wins over them", file=out)
    else:
        print(f"Configuration files read: none (voice-mcp reads {user_env_file()} and ./.env)", file=out)
    print("Settings:", file=out)
    for key, value in report.settings.items():
        print(f"  {key} = {value}", file=out)


async def run_doctor(settings: Settings, out: TextIO = sys.stdout) -> int:
    service = VoiceService(settings)
    try:
        report = await service.status()
    finally:
        await service.aclose()
    print_report(report, out)
    problems = verdict(report)
    if problems:
        print("\nvoice-mcp cannot hold a conversation yet: " + "; ".join(problems) + ".", file=out)
        return 1
    print("\nAll set: voice-mcp can hold a conversation.", file=out)
    return 0
