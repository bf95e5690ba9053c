"""Make a worker job process fully warm before it speaks, and size the pool of idle job processes to the machine.

A job process is started (and warmed in `agent.worker.prewarm`) before a room is assigned to it. Loading the
models is not enough to make the first message play on time:

- livekit-agents builds its hyphenator (the transcript synchronizer's) and its sentence tokenizer lazily, on the
  first sentence it speaks, blocking the job's event loop for 100–330 ms right when the first audio should flow;
- the first synthesis of an ONNX voice pays for allocations and graph optimisation once.

`warm_text_processing` and `warm_synthesis` do both here, once per process, with nothing played. And since
livekit-agents replaces a taken idle process at once, a second process loads every model while the first
message plays; `lower_priority_while_idle` lets it do that at a lower CPU priority when the job can take the
normal priority back (`restore_priority` at the start of a job), and `idle_processes` keeps no more idle
processes than the memory holds.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

logger = logging.getLogger(__name__)

WARMUP_TEXT = "Ready."
WARMUP_TIMEOUT = 60.0
"""Seconds the silent warm-up synthesis may take (on two busy cores); it is abandoned after that, not fatal."""
IDLE_NICE = 10
"""CPU niceness of a job process while it loads models with no job (only where `restore_priority` can undo it)."""
JOB_PROCESS_MB = 700
"""Resident memory of one warm job process with the embedded models (faster-whisper tiny.en, Piper, Silero)."""


def warm_text_processing() -> float:
    """Build livekit-agents' lazily built text tools (hyphenator, sentence and word tokenizers) in this process.

    Returns the seconds it took (the time the first spoken sentence would otherwise block the event loop)."""
    from livekit.agents import tokenize

    started = time.perf_counter()
    tokenize.basic.hyphenate_word("synchronisation")
    tokenize.basic.split_words(WARMUP_TEXT, split_character=True)
    tokenize.blingfire.SentenceTokenizer().tokenize(WARMUP_TEXT)
    tokenize.basic.SentenceTokenizer().tokenize(WARMUP_TEXT)
    return time.perf_counter() - started


def embedded(component: Any) -> list[Any]:
    """The on-device providers behind `component` (ours have a `load()` coroutine), fallback adapters opened up."""
    found: list[Any] = []
    pending = [component]
    while pending:
        current = pending.pop()
        pending.extend(getattr(current, "_stt_instances", []) or getattr(current, "_tts_instances", []))
        load = getattr(current, "load", None)
        if load is not None and asyncio.iscoroutinefunction(load):
            found.append(current)
    return found


async def load_models(*components: Any) -> None:
    """Load the on-device models now (network providers are left alone: a connection opened here would belong
    to this short-lived event loop, not the job's). A provider that cannot load is reported when it is used."""
    for component in components:
        for provider in embedded(component):
            try:
                await provider.load()
            except Exception as exc:
                logger.warning("could not preload %s: %s", type(provider).__name__, exc)


_warm_voices: set[tuple[str, str]] = set()
"""The on-device voices this process has synthesised with: their loaded sessions are shared by every TTS object
of the process (`agent.speech.model_weights`), so a second warm-up (a job thread's, with
`VOICE_MCP_JOB_EXECUTOR=thread`) would only take CPU from the rooms that are speaking."""


def _voice_key(provider: Any) -> tuple[str, str]:
    return (type(provider).__name__, str(getattr(provider, "model", "")))


async def warm_synthesis(tts: Any, within: float = WARMUP_TIMEOUT) -> int:
    """Synthesise a short sentence with every on-device TTS behind `tts` and throw the audio away (never played).

    Returns how many providers are warm (produced audio now, or earlier in this process: a voice is warmed once
    per process). Bounded by `within` seconds in all; failures are logged only."""
    warmed = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    for provider in embedded(tts):
        voice = _voice_key(provider)
        if voice in _warm_voices:  # another job thread of this process warmed this voice's shared session
            warmed += 1
            continue
        remaining = deadline - loop.time()
        if remaining <= 0:
            logger.warning("warm-up synthesis abandoned after %.0f s", within)
            break
        stream = provider.synthesize(WARMUP_TEXT)
        try:
            frame = await asyncio.wait_for(stream.collect(), remaining)
            warmed += int(frame.samples_per_channel > 0)
            if frame.samples_per_channel > 0:
                _warm_voices.add(voice)
        except Exception as exc:  # TimeoutError included: the first real call reports a broken provider
            logger.warning("warm-up synthesis with %s failed: %r", type(provider).__name__, exc)
        finally:
            await stream.aclose()
    return warmed


async def warm_process(stt: Any, tts: Any) -> None:
    """Everything a job process does before it is offered a job: models loaded, text tools built, TTS warmed."""
    await load_models(stt, tts)
    text_s = warm_text_processing()
    warmed = await warm_synthesis(tts)
    logger.info(
        "job process warm",
        extra={"text_tools_ms": round(text_s * 1000, 1), "tts_warmed": warmed},
    )


# --- CPU priority and the number of idle processes -------------------------------------------------------------


def can_restore_priority() -> bool:
    """Whether this process may raise its CPU priority again after lowering it (root, or RLIMIT_NICE allows)."""
    if os.geteuid() == 0:
        return True
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NICE)
    except (ImportError, AttributeError, OSError, ValueError):
        return False
    # RLIMIT_NICE r allows niceness down to 20 - r; r == RLIM_INFINITY allows anything
    return soft == resource.RLIM_INFINITY or 20 - soft <= os.getpriority(os.PRIO_PROCESS, 0)


def lower_priority_while_idle() -> int | None:
    """Lower this process's CPU priority while it loads with no job; the niceness to restore, or None if unchanged.

    Never lowered where it could not be raised again: a job must not run at a lower priority than its audio needs.
    """
    if not can_restore_priority():
        return None
    try:
        original = os.getpriority(os.PRIO_PROCESS, 0)
        os.setpriority(os.PRIO_PROCESS, 0, max(original, IDLE_NICE))
    except OSError as exc:
        logger.debug("job process priority unchanged: %s", exc)
        return None
    return original


def restore_priority(original: int | None) -> None:
    """Give a process that took a job its normal CPU priority back (see `lower_priority_while_idle`), on every
    thread: on Linux a niceness belongs to a thread, and the threads started while the process loaded its models
    (Whisper's and ONNX Runtime's compute threads, the executor) were born lowered. Left at that niceness, Whisper
    ran 3-4x slower than the local loop's on a busy machine and the room path's turns ended seconds late."""
    if original is None:
        return
    failed: list[str] = []
    for thread_id in _thread_ids():
        try:
            if thread_id == 0 or os.getpriority(os.PRIO_PROCESS, thread_id) != original:
                os.setpriority(os.PRIO_PROCESS, thread_id, original)
        except ProcessLookupError:
            continue  # the thread ended meanwhile
        except OSError as exc:
            failed.append(str(exc))
    if failed:
        logger.warning("could not restore the job process's CPU priority: %s", failed[0])


def _thread_ids() -> list[int]:
    """This process's threads (Linux: /proc/self/task); [0] (the caller, i.e. the process elsewhere) if unknown."""
    try:
        return [int(name) for name in os.listdir("/proc/self/task")]
    except (OSError, ValueError):
        return [0]


def available_memory_mb() -> float | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.virtual_memory().available / (1024 * 1024)


def idle_processes(cpu_count: float, memory_mb: float | None, per_process_mb: float = JOB_PROCESS_MB) -> int:
    """How many warm idle job processes to keep: one, so a dispatch is served at once, when the memory holds it
    next to the job it will replace (two processes); none on a machine without that memory or without two cores,
    where a second process loading models would take the first message's CPU or memory."""
    if cpu_count < 2:
        return 0
    if memory_mb is not None and memory_mb < 2 * per_process_mb:
        return 0
    return 1
