"""(e) The real worker's cost per room: `python -m agent start` serving N rooms of idle or talking users.

Processes, all inside the network namespace: the loopback LiveKit server, the worker (`python -m agent start`,
production settings: Silero VAD, faster-whisper, Piper; one job process per room), and the users
(`bench.capacity_users`, one process for every room's user). Each room is set up as in real use: the user joins,
then the agent is dispatched to the room (`CreateAgentDispatch`) and joins it.

Three phases, each with its own server, worker and users:

- **idle**: N rooms whose user has an open, silent microphone. After each step the worker's process tree (the
  worker, its forkserver and job processes: every descendant, read from /proc with psutil) is sampled over a
  window: CPU in percent of one core, and memory (PSS, so pages the forked job processes share are counted once).
  Per room = (tree at N rooms − tree with no room) / N. Idle rooms are measured once they have been quiet for
  more than `TRACK_IDLE` (the agent's track gone: its users tell the worker when they hear it, as the page does),
  and every idle row also splits the window's CPU by process (worker, forkserver, job; the spare job process
  livekit keeps warm is in the baseline too) and by thread name, from /proc/PID/task.
- **talking**: N rooms whose user speaks a reply every few seconds (STT and, for the transcription, the whole
  turn path run). Per step: the worker tree's CPU and memory as above, and end of speech → text per room (the
  user's reply ends → the worker's final transcription of it arrives in the room; see `bench.capacity_users`).
  `rooms_talking_sustained` is the largest N whose median end of speech → text stays within `SLACK_MS` (100 ms) of
  the 1-room figure and where no reply went untranscribed; the phase stops at the first step past that.
- **heard**: N rooms of which one has a talking user and N − 1 idle users (measured, like the idle rooms, past
  `TRACK_IDLE`): whether the worker still hears the one user who speaks as fast while it carries idle rooms — the
  user-facing form of "VAD lateness": a VAD that trails the audio, a busy event loop or a starved Whisper all show
  as a later transcript. `rooms_heard_sustained` is the largest N whose talking room's median end of speech →
  text stays within `SLACK_MS` of the 1-room figure with no reply untranscribed. Its window is three times the
  others' (one room's replies are fewer), and every step is measured (the talking phase stops at the first late one).

`BENCH_WORKER_ROOT=/path/to/checkout` runs the worker from another checkout (e.g. the previous release), so a
before/after comparison runs on the same machine in the same session; `BENCH_WORKER_EXECUTOR=thread` runs every
job in a thread of the worker process (the worker's `VOICE_MCP_JOB_EXECUTOR=thread`) instead of a process per room,
and the bench checks from the process tree that the worker did (a checkout older than the setting would not).
`BENCH_WORKER_STEPS=1,2` and `BENCH_WORKER_PHASES=idle` make a small run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Literal

from livekit import api

from tests.e2e_livekit.harness import REPO, ServerProcess, WorkerProcess, start_server

from .capacity import _Child
from .harness import Measurement

SLACK_MS = 100.0
SETTLE = 4.0
Phase = Literal["idle", "talking", "heard"]
TRACK_IDLE = 15
"""Quiet seconds after which the bench's worker takes its audio track away (`VOICE_MCP_AGENT_TRACK_IDLE`; the
default is 120 s): idle rows are measured past it, in the steady state of a room left idle."""
Executor = Literal["process", "thread"]
WORKER_PREFIX = "voice-mcp-agent-"


def _worker_root() -> Path:
    return Path(os.environ.get("BENCH_WORKER_ROOT") or REPO).resolve()


def _executor() -> Executor:
    executor = os.environ.get("BENCH_WORKER_EXECUTOR", "process")
    if executor not in ("process", "thread"):
        raise ValueError(f"BENCH_WORKER_EXECUTOR={executor!r}: use process or thread")
    return executor  # type: ignore[return-value]


def start_bench_worker(
    server: ServerProcess,
    logs: Path,
    name: str,
    *,
    root: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> WorkerProcess:
    """`root`: the checkout whose worker runs (default: `BENCH_WORKER_ROOT`, else this one)."""
    root = root or _worker_root()
    log = logs / f"worker-{name}.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    env.update(
        LIVEKIT_URL=server.url,
        LIVEKIT_API_KEY=server.api_key,
        LIVEKIT_API_SECRET=server.api_secret,
        VOICE_MCP_WORKER_PORT="0",
        VOICE_MCP_TTS="piper",
        VOICE_MCP_STT="faster-whisper",
        VOICE_MCP_JOB_EXECUTOR=_executor(),
        VOICE_MCP_AGENT_TRACK_IDLE=str(TRACK_IDLE),
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(root),
    )
    env.update(extra_env or {})
    python = root / ".venv" / "bin" / "python"
    proc = subprocess.Popen(
        [str(python) if python.exists() else sys.executable, "-m", "agent", "start"],
        cwd=logs,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = WorkerProcess(proc, log)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if worker.registered():
            return worker
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    worker.kill()
    raise RuntimeError(f"the worker did not register:\n{worker.output()[-3000:]}")


class TreeMeter:
    """CPU (percent of one core) and memory of a process and all its descendants, from /proc (psutil)."""

    def __init__(self, pid: int) -> None:
        import psutil

        self._root = psutil.Process(pid)

    def _procs(self) -> list[Any]:
        with contextlib.suppress(Exception):
            return [self._root, *self._root.children(recursive=True)]
        return []

    def cpu_seconds(self) -> dict[int, float]:
        times: dict[int, float] = {}
        for proc in self._procs():
            with contextlib.suppress(Exception):
                t = proc.cpu_times()
                times[proc.pid] = t.user + t.system
        return times

    def memory_mb(self) -> tuple[float, float]:
        """(PSS, RSS) of the tree in MB; PSS counts pages shared by forked processes once."""
        pss = rss = 0.0
        for proc in self._procs():
            with contextlib.suppress(Exception):
                info = proc.memory_full_info()
                pss += getattr(info, "pss", info.rss)
                rss += info.rss
        return pss / 2**20, rss / 2**20

    def thread_seconds(self) -> dict[tuple[int, int], tuple[str, float]]:
        """(pid, tid) → (thread name, CPU seconds) for every thread of the tree (/proc/PID/task/TID)."""
        times: dict[tuple[int, int], tuple[str, float]] = {}
        for proc in self._procs():
            with contextlib.suppress(Exception):
                for thread in proc.threads():
                    name = "?"
                    with contextlib.suppress(OSError):
                        name = Path(f"/proc/{proc.pid}/task/{thread.id}/comm").read_text().strip()
                    times[(proc.pid, thread.id)] = (name, thread.user_time + thread.system_time)
        return times

    def roles(self) -> dict[int, str]:
        """pid → what the process is: the worker, its forkserver/helpers, or a job process (busy or spare)."""
        roles: dict[int, str] = {}
        for proc in self._procs():
            with contextlib.suppress(Exception):
                if proc.pid == self._root.pid:
                    roles[proc.pid] = "worker"
                elif proc.ppid() == self._root.pid:  # job processes are forked by livekit's forkserver
                    cmd = " ".join(proc.cmdline())
                    roles[proc.pid] = "resource_tracker" if "resource_tracker" in cmd else "forkserver"
                else:
                    roles[proc.pid] = "job"
        return roles

    async def cpu_percent(self, seconds: float) -> float:
        start, t0 = self.cpu_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        end, elapsed = self.cpu_seconds(), time.monotonic() - t0
        used = sum(value - start.get(pid, 0.0) for pid, value in end.items())
        return used / elapsed * 100

    async def cpu_split(self, seconds: float) -> tuple[float, list[dict[str, Any]]]:
        """The tree's CPU over `seconds` (percent of one core) and its split by process and thread name."""
        start, t0 = self.thread_seconds(), time.monotonic()
        await asyncio.sleep(seconds)
        end, elapsed = self.thread_seconds(), time.monotonic() - t0
        roles = self.roles()
        per_thread: dict[tuple[int, str], float] = {}
        for key, (name, value) in end.items():
            before = start.get(key)
            used = value - (before[1] if before is not None else 0.0)
            per_thread[(key[0], name)] = per_thread.get((key[0], name), 0.0) + used / elapsed * 100
        processes: list[dict[str, Any]] = []
        counts: dict[tuple[int, str], int] = {}
        for pid, name in ((pid, name) for (pid, _tid), (name, _cpu) in end.items()):
            counts[(pid, name)] = counts.get((pid, name), 0) + 1
        for pid in sorted({pid for pid, _ in per_thread}):
            threads = {n: round(v, 2) for (p, n), v in sorted(per_thread.items(), key=lambda kv: -kv[1]) if p == pid}
            processes.append(
                {
                    "pid": pid,
                    "role": roles.get(pid, "gone"),
                    "cpu": round(sum(threads.values()), 2),
                    "threads": threads,
                    "thread_count": {n: counts[(pid, n)] for n in threads},  # threads of that name in the process
                }
            )
        return sum(p["cpu"] for p in processes), processes


def check_executor(meter: TreeMeter, executor: Executor, rooms: int) -> None:
    """The worker runs its jobs the way the bench asked (a checkout without the setting runs processes)."""
    jobs = sum(role == "job" for role in meter.roles().values())
    if executor == "thread" and jobs:
        raise RuntimeError(f"thread jobs asked for, but the worker runs {jobs} job processes (VOICE_MCP_JOB_EXECUTOR)")
    if executor == "process" and jobs < rooms:
        raise RuntimeError(f"{rooms} rooms but {jobs} job processes: the worker does not run a process per room")


async def _dispatch(server: ServerProcess, room: str) -> None:
    lkapi = api.LiveKitAPI(server.url, server.api_key, server.api_secret)
    try:
        await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="voice-mcp", room=room))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
            if any(p.identity.startswith(WORKER_PREFIX) for p in listed.participants):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"no worker joined room {room} within 240 s")
    finally:
        await lkapi.aclose()


async def _agent_tracks(server: ServerProcess, rooms: list[str]) -> int:
    """How many of the rooms have an audio track published by the agent right now."""
    lkapi = api.LiveKitAPI(server.url, server.api_key, server.api_secret)
    try:
        count = 0
        for room in rooms:
            listed = await lkapi.room.list_participants(api.ListParticipantsRequest(room=room))
            count += sum(len(p.tracks) for p in listed.participants if p.identity.startswith(WORKER_PREFIX))
        return count
    finally:
        await lkapi.aclose()


async def run_phase(phase: Phase, steps: list[int], seconds: float, logs: Path) -> list[dict[str, Any]]:
    executor = _executor()
    server = start_server(logs)
    worker: WorkerProcess | None = None
    users: _Child | None = None
    results: list[dict[str, Any]] = []
    try:
        worker = await asyncio.to_thread(start_bench_worker, server, logs, phase)
        users = _Child("bench.capacity_users", server.url, logs / f"users-{phase}.log")
        assert await users.expect(180) == "ready"
        meter = TreeMeter(worker.proc.pid)
        await asyncio.sleep(SETTLE * 2)  # the prewarmed job process finishes loading
        base_cpu, base_split = await meter.cpu_split(seconds)
        base_pss, base_rss = meter.memory_mb()
        results.append(
            {"rooms": 0, "cpu_percent": base_cpu, "pss_mb": base_pss, "rss_mb": base_rss, "processes": base_split}
        )
        rooms = 0
        names: list[str] = []
        first_eos: float | None = None
        for step in steps:
            while rooms < step:
                name = f"cap-{phase}-{uuid.uuid4().hex[:6]}-{rooms}"
                names.append(name)
                talks = phase == "talking" or (phase == "heard" and rooms == 0)
                await users.send(f"{'talk' if talks else 'idle'} {name} {server.token(f'user-{rooms}', name)}")
                assert (await users.expect(300)).startswith("added")  # the first talking user waits for Piper
                await _dispatch(server, name)
                rooms += 1
            # idle rooms are measured in their steady state: past the quiet time after which the agent's track goes
            await asyncio.sleep(SETTLE + (0.0 if phase == "talking" else TRACK_IDLE))
            check_executor(meter, executor, rooms)
            row: dict[str, Any] = {
                "rooms": rooms,
                "executor": executor,
                "agent_tracks": await _agent_tracks(server, names),
            }
            if phase != "idle":
                window = seconds * (3 if phase == "heard" else 1)
                await users.send(f"measure {window}")
                cpu_task = asyncio.create_task(meter.cpu_percent(window))
                answer = json.loads(await users.expect(window + 120))
                row["cpu_percent"] = await cpu_task
                per_room = [r["eos_to_text_s"] for r in answer["rooms"]]
                every = [x * 1000 for samples in per_room for x in samples]
                row["eos_to_text_ms"] = every
                row["room_medians_ms"] = [statistics.median(s) * 1000 for s in per_room if s]
                row["untranscribed"] = sum(r["untranscribed"] for r in answer["rooms"])
                row["replies"] = sum(r["replies"] for r in answer["rooms"])
            else:
                row["cpu_percent"], row["processes"] = await meter.cpu_split(seconds)
            row["pss_mb"], row["rss_mb"] = meter.memory_mb()
            row["cpu_per_room"] = (row["cpu_percent"] - base_cpu) / rooms
            row["pss_per_room_mb"] = (row["pss_mb"] - base_pss) / rooms
            row["load_average"] = os.getloadavg()[0]
            results.append(row)
            if phase != "idle":
                median = statistics.median(row["eos_to_text_ms"]) if row["eos_to_text_ms"] else None
                if first_eos is None:
                    first_eos = median
                row["sustained"] = bool(
                    median is not None
                    and first_eos is not None
                    and median <= first_eos + SLACK_MS
                    and row["untranscribed"] == 0
                )
                if not row["sustained"] and phase == "talking":
                    break  # talking rooms only pile up from here; a heard step stays informative
    finally:
        if users is not None:
            users.stop()
        if worker is not None:
            worker.stop()
        server.stop()
    return results


def _rows(phase: Phase, results: list[dict[str, Any]]) -> list[Measurement]:
    rows: list[Measurement] = []
    base = results[0]
    for r in results[1:]:
        n = r["rooms"]
        extra = {k: (round(v, 1) if isinstance(v, float) else v) for k, v in r.items() if k != "eos_to_text_ms"}
        extra["base_cpu_percent"] = round(base["cpu_percent"], 1)
        extra["base_pss_mb"] = round(base["pss_mb"], 1)
        notes = (
            f"{r['executor']} jobs, worker tree CPU {r['cpu_percent']:.0f} % of a core "
            f"({r['cpu_per_room']:.1f} % per room over the {base['cpu_percent']:.0f} % with no room), "
            f"PSS {r['pss_mb']:.0f} MB ({r['pss_per_room_mb']:.0f} MB per room), "
            f"agent tracks published {r['agent_tracks']}/{n}, load average {r['load_average']:.1f}"
        )
        if phase == "idle":
            rows.append(Measurement.single(f"worker_idle_cpu_per_room_{n}", "%", r["cpu_per_room"], notes, **extra))
            continue
        if phase == "heard":
            notes = f"one talking room among {n - 1} idle: " + notes
        notes += f", {r['replies']} replies, {r['untranscribed']} untranscribed" + (
            "" if r.get("sustained") else " — LATE"
        )
        rows.append(Measurement.of(f"worker_{phase}_eos_to_text_{n}", "ms", r["eos_to_text_ms"], notes, **extra))
    return rows


def _sustained(phase: Phase, results: list[dict[str, Any]], rooms_described: str) -> Measurement:
    """`rooms_{phase}_sustained`: the largest tested N whose talking room(s) stayed within `SLACK_MS` of 1 room."""
    sustained = [r["rooms"] for r in results[1:] if r.get("sustained")]
    return Measurement.single(
        f"rooms_{phase}_sustained",
        "rooms",
        max(sustained) if sustained else 0,
        f"largest tested N of {rooms_described} with median end of speech → text within {SLACK_MS:g} ms of 1 room "
        f"(tested {', '.join(str(r['rooms']) for r in results[1:])})",
    )


async def run_worker_capacity(*, steps: list[int], seconds: float, out: Path) -> list[Measurement]:
    logs = out / "logs" / time.strftime("capacity-worker-%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    phases = os.environ.get("BENCH_WORKER_PHASES", "idle,talking,heard").split(",")
    idle = await run_phase("idle", steps, seconds, logs) if "idle" in phases else []
    talking = await run_phase("talking", steps, seconds, logs) if "talking" in phases else []
    heard = await run_phase("heard", steps, seconds, logs) if "heard" in phases else []
    rows = (
        (_rows("idle", idle) if idle else [])
        + (_rows("talking", talking) if talking else [])
        + (_rows("heard", heard) if heard else [])
    )
    idle_rows = idle[1:]
    largest = idle_rows[-1] if idle_rows else None
    summary = [
        Measurement.single(
            "worker_idle_cpu_per_room",
            "%",
            largest["cpu_per_room"] if largest else None,
            f"percent of one core per idle room at {largest['rooms'] if largest else 0} rooms (worker process tree)",
        ),
        Measurement.single(
            "worker_pss_per_room",
            "MB",
            largest["pss_per_room_mb"] if largest else None,
            "memory (PSS) per idle room at the largest step",
        ),
    ]
    if talking:
        summary.append(_sustained("talking", talking, "talking rooms"))
    if heard:
        summary.append(_sustained("heard", heard, "rooms (one talking, the rest idle)"))
    first = talking[1] if len(talking) > 1 else None
    if first is not None and first["eos_to_text_ms"]:
        summary.append(
            Measurement.of(
                "worker_eos_to_text_1_room",
                "ms",
                first["eos_to_text_ms"],
                "one talking room: the user's reply ends → the worker's final transcription arrives",
                chart=True,
            )
        )
    return summary + rows
