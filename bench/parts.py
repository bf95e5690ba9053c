"""The benchmark parts, their iteration counts (full / `--quick`), and what each needs to run."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from .harness import Measurement
from .speech import Speech


@dataclass(frozen=True)
class Context:
    speech: Speech
    quick: bool
    out: Path
    load_size: tuple[int, int, int] | None = None
    """`--load-size`: rooms, calls per room, rooms at a time (None: the issue's 20, 50, 4; --quick 2, 5, 2)."""

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full


PartFn = Callable[[Context], Awaitable[list[Measurement]]]


@dataclass(frozen=True)
class Part:
    name: str
    what: str
    run: PartFn
    needs_netns: bool = False


async def _rtf(ctx: Context) -> list[Measurement]:
    from .speech import run_rtf

    return await run_rtf(ctx.speech, iterations=ctx.n(3, 1))


async def _endpointing(ctx: Context) -> list[Measurement]:
    from agent.speech import build_vad

    from .endpointing import run_side_by_side
    from .settings import bench_settings

    return await run_side_by_side(
        ctx.speech, build_vad(bench_settings()), iterations=ctx.n(6, 1), pause_count=ctx.n(20, 4)
    )


async def _local(ctx: Context) -> list[Measurement]:
    from .local_loop import run_local

    return await run_local(ctx.speech, iterations=ctx.n(6, 1), out=ctx.out)


async def _first_audio(ctx: Context) -> list[Measurement]:
    from .local_first_audio import run_first_audio

    return await run_first_audio(ctx.speech, rounds=ctx.n(10, 2), out=ctx.out)


async def _room(ctx: Context) -> list[Measurement]:
    from .room import run_room

    return await run_room(ctx.speech, iterations=ctx.n(10, 2), out=ctx.out)


async def _turns(ctx: Context) -> list[Measurement]:
    from .turns import run_turns

    iterations = int(os.environ.get("BENCH_TURNS_ITERATIONS") or ctx.n(6, 2))  # replies per length and side
    return await run_turns(ctx.speech, iterations=iterations, out=ctx.out)


async def _capacity(ctx: Context) -> list[Measurement]:
    from .capacity import run_capacity

    return await run_capacity(ctx.speech, max_rooms=ctx.n(32, 2), seconds=ctx.n(20.0, 6.0), out=ctx.out)


async def _worker(ctx: Context) -> list[Measurement]:
    from .capacity_worker import run_worker_capacity

    steps = [1, 2] if ctx.quick else [1, 2, 4, 8, 12, 16, 20, 24]
    if os.environ.get("BENCH_WORKER_STEPS"):  # e.g. "1" or "1,2": a small run on a shared machine
        steps = [int(n) for n in os.environ["BENCH_WORKER_STEPS"].split(",")]
    return await run_worker_capacity(steps=steps, seconds=ctx.n(20.0, 8.0), out=ctx.out)


async def _fallback(ctx: Context) -> list[Measurement]:
    from .fallback import run_fallback

    return await run_fallback(iterations=ctx.n(5, 1), out=ctx.out)


async def _load(ctx: Context) -> list[Measurement]:
    from .load import run_load

    rooms, calls, concurrency = ctx.load_size or (ctx.n(20, 2), ctx.n(50, 5), ctx.n(4, 2))
    return await run_load(rooms=rooms, calls=calls, concurrency=concurrency, out=ctx.out)


PARTS: list[Part] = [
    Part("rtf", "(d) STT and TTS real-time factors", _rtf),
    Part(
        "endpointing",
        "side by side: fixed 1 s silence (webrtcvad) vs our silence rule vs the turn model: latency, WER, cut-offs",
        _endpointing,
    ),
    Part("local", "(a) end of speech → converse returns, (b) converse → first audio, local loop", _local),
    Part(
        "first_audio",
        "(b) converse → first sound, local loop: speaker closed after every call vs kept open (A/B interleaved)",
        _first_audio,
    ),
    Part("room", "(b) converse → first audio through a room, (c) bridge↔worker round trip", _room, needs_netns=True),
    Part(
        "turns",
        "(a) side by side on the same replies: end of speech → converse returned, local loop vs room (stages)",
        _turns,
        needs_netns=True,
    ),
    Part(
        "capacity",
        "(e) rooms per worker process with VAD before audio is late, memory per room",
        _capacity,
        needs_netns=True,
    ),
    Part(
        "worker",
        "(e) the real worker: CPU and memory per idle room, end of speech → text as talking rooms are added",
        _worker,
        needs_netns=True,
    ),
    Part("fallback", "auto's decision after the worker is killed (room state, not a timeout)", _fallback,
         needs_netns=True),
    Part("load", "rooms × converse calls through one worker: lost/duplicated turns, protocol overhead", _load,
         needs_netns=True),
]
