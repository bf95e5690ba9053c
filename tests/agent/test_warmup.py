"""A job process is fully warm before it is offered a job (agent.warmup), and the idle pool fits the machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.speech import build_tts
from agent.warmup import JOB_PROCESS_MB, idle_processes, warm_synthesis
from tests.speech_fixtures import clean_settings

REPO = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


def test_the_text_tools_livekit_builds_lazily_are_built_by_the_warm_up() -> None:
    # in a fresh process: the hyphenator is built on first use, which the warm-up must be
    out = run_python(
        "from livekit.agents.tokenize import _basic_hyphenator as h\n"
        "from agent.warmup import warm_text_processing\n"
        "before = h._get_hyphenator.cache_info().currsize\n"
        "warm_text_processing()\n"
        "print(before, h._get_hyphenator.cache_info().currsize)\n"
    )
    assert out.split() == ["0", "1"]


async def test_the_warm_up_synthesises_with_every_embedded_voice_and_plays_nothing() -> None:
    tts = build_tts(clean_settings(tts=["piper", "espeak"]))  # a fallback chain: Piper is embedded, espeak a program
    try:
        assert await warm_synthesis(tts) == 1
    finally:
        await tts.aclose()


async def test_a_voice_is_warmed_once_per_process_however_many_job_threads_build_their_tts() -> None:
    """With VOICE_MCP_JOB_EXECUTOR=thread every job thread builds its own PiperTTS around the process's one loaded
    voice: the second warm-up must not synthesise again while other rooms of the process speak."""
    settings = clean_settings(tts=["piper"])
    first, second = build_tts(settings), build_tts(settings)
    synthesised: list[str] = []
    real_synthesize = second.synthesize

    def counting_synthesize(text: str, **options: Any) -> Any:
        synthesised.append(text)
        return real_synthesize(text, **options)

    second.synthesize = counting_synthesize  # type: ignore[method-assign]
    try:
        assert await warm_synthesis(first) == 1
        assert await warm_synthesis(second) == 1
        assert synthesised == []
    finally:
        await first.aclose()
        await second.aclose()


def test_a_job_process_loads_at_a_lower_priority_and_gets_its_own_back_for_the_job() -> None:
    out = run_python(
        "import os\n"
        "from agent.warmup import lower_priority_while_idle, restore_priority, can_restore_priority\n"
        "start = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "saved = lower_priority_while_idle()\n"
        "idle = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "restore_priority(saved)\n"
        "print(can_restore_priority(), start, idle, os.getpriority(os.PRIO_PROCESS, 0), saved)\n"
    )
    restorable, start, idle, after, saved = out.split()
    if restorable == "True":
        assert int(idle) >= 10 and int(after) == int(start) and saved == start
    else:  # never lowered where it could not be raised again
        assert idle == start == after and saved == "None"


def test_threads_started_while_the_process_loaded_get_the_normal_priority_back_too() -> None:
    """Whisper's and ONNX Runtime's compute threads start while the idle process loads its models: on Linux they
    keep the lowered niceness unless every thread is restored (the room path's Whisper ran 3-4x slower)."""
    out = run_python(
        "import os, threading\n"
        "from agent.warmup import lower_priority_while_idle, restore_priority, can_restore_priority\n"
        "start = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "saved = lower_priority_while_idle()\n"
        "release = threading.Event()\n"
        "worker = threading.Thread(target=release.wait)\n"
        "worker.start()\n"
        "idle = os.getpriority(os.PRIO_PROCESS, worker.native_id)\n"
        "restore_priority(saved)\n"
        "after = os.getpriority(os.PRIO_PROCESS, worker.native_id)\n"
        "release.set()\n"
        "worker.join()\n"
        "print(can_restore_priority(), start, idle, after)\n"
    )
    restorable, start, idle, after = out.split()
    if restorable == "True":
        assert int(idle) >= 10 and int(after) == int(start)
    else:
        assert idle == start == after


@pytest.mark.parametrize(
    ("cpus", "memory_mb", "expected"),
    [
        (2, 16000, 1),  # a normal machine: one warm process, so a dispatch is served at once
        (8, 64000, 1),  # one persistent room needs one job, however big the machine
        (1, 16000, 0),  # one core: a second process loading models would take the first message's CPU
        (4, 1.5 * JOB_PROCESS_MB, 0),  # no room for a second process next to the job
        (2, None, 1),  # memory unknown (no psutil): the default
    ],
)
def test_idle_processes_fit_the_machine(cpus: int, memory_mb: float | None, expected: int) -> None:
    assert idle_processes(cpus, memory_mb) == expected
