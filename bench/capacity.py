"""(e) How many rooms one worker process serves with VAD running before audio arrives late, and memory per room.

Three processes besides this one, all inside the network namespace: the loopback LiveKit server, the users
(`bench.capacity_publisher`: one participant per room speaking Piper replies non-stop) and the worker side
(`bench.capacity_host`: one process, one Silero VAD, one `vad.stream()` per room fed from the subscribed track,
as an AgentSession does). Rooms are added in steps (1, 2, 4, 6, 8, 12, 16 … up to the limit); after each step the
host settles, its RSS is read, and VAD lateness (defined in `bench.capacity_host`) is collected for a window.

A step is sustained while the worst room's p90 lateness stays at or under `LATE_MS` (200 ms, the delay at which
livekit's Silero plugin itself warns that inference is slower than real time); the first step past that ends the
run. Memory per added room is the slope of RSS over rooms (least squares over the steps).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from mcp_bridge.stats import percentile
from tests.e2e_livekit.harness import REPO, ServerProcess, start_server

from .harness import Measurement
from .speech import Speech

LATE_MS = 200.0
STEPS = (1, 2, 4, 6, 8, 12, 16, 24, 32)
SETTLE = 3.0


class _Child:
    """A helper process spoken to line by line over stdin/stdout."""

    def __init__(self, module: str, url: str, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module, url],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log.open("wb"),
            text=True,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    async def expect(self, within: float) -> str:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), within)
        except TimeoutError:
            raise RuntimeError(f"{self.log.name}: no answer within {within:.0f} s") from None
        if not line:
            raise RuntimeError(f"{self.log.name} exited:\n{self.log.read_text(errors='replace')[-3000:]}")
        return line.strip()

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(Exception):
                self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


class _CpuMeter:
    """CPU use of some processes over an interval (percent of one core; 200 = both cores of this machine)."""

    def __init__(self, pids: dict[str, int]) -> None:
        import psutil

        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._start = {name: self._total(p) for name, p in self._procs.items()}
        self._t0 = time.monotonic()

    @staticmethod
    def _total(proc: Any) -> float:
        """CPU seconds of the process and its children (the server runs in a process group of its own)."""
        procs = [proc, *proc.children(recursive=True)]
        total = 0.0
        for p in procs:
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def read(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        return {name: round((self._total(p) - self._start[name]) / elapsed * 100, 1) for name, p in self._procs.items()}


def _step_stats(answer: dict[str, Any]) -> dict[str, Any]:
    per_room = [np.array(s["lateness_s"]) * 1000 for s in answer["sessions"]]
    every = np.concatenate(per_room) if per_room else np.zeros(0)
    inference = [x * 1000 for s in answer["sessions"] for x in s["inference_s"]]
    worst_p90 = max((float(percentile(r.tolist(), 0.9)) for r in per_room if r.size), default=None)
    return {
        "lateness_ms": every.tolist(),
        "worst_room_p90_ms": worst_p90,
        "late_fraction": float((every > LATE_MS).mean()) if every.size else None,
        "inference_p90_ms": percentile(inference, 0.9) if inference else None,
        "windows": int(every.size),
    }


async def run_capacity(speech: Speech, *, max_rooms: int, seconds: float, out: Path) -> list[Measurement]:
    logs = out / "logs" / time.strftime("capacity-%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    server = start_server(logs)
    publisher = host = None
    rows: list[Measurement] = []
    try:
        publisher = _Child("bench.capacity_publisher", server.url, logs / "publisher.log")
        host = _Child("bench.capacity_host", server.url, logs / "host.log")
        assert await publisher.expect(120) == "ready"
        json.loads(await host.expect(120))
        await asyncio.sleep(SETTLE)
        rss: list[tuple[int, float]] = [(0, host.rss_mb())]
        sustained = 0
        rooms = 0
        for step in [s for s in STEPS if s <= max_rooms]:
            while rooms < step:
                await _add_room(server, publisher, host, f"cap-{uuid.uuid4().hex[:6]}-{rooms}")
                rooms += 1
            await asyncio.sleep(SETTLE)
            rss.append((rooms, host.rss_mb()))
            cpu = _CpuMeter({"host": host.proc.pid, "users": publisher.proc.pid, "server": server.proc.pid})
            await host.send(f"measure {seconds}")
            stats = _step_stats(json.loads(await host.expect(seconds + 60)))
            stats["cpu_percent"] = cpu.read()
            ok = bool(stats["worst_room_p90_ms"] is not None and stats["worst_room_p90_ms"] <= LATE_MS)
            rows.append(
                Measurement.of(
                    f"vad_lateness_{rooms}_rooms",
                    "ms",
                    stats.pop("lateness_ms"),
                    f"worst room p90 {_num(stats['worst_room_p90_ms'])} ms, windows late (>{LATE_MS:g} ms) "
                    f"{_pct(stats['late_fraction'])}, inference p90 {_num(stats['inference_p90_ms'])} ms, "
                    f"host RSS {rss[-1][1]:.0f} MB, CPU % of one core "
                    + ", ".join(f"{k} {v:.0f}" for k, v in stats["cpu_percent"].items())
                    + ("" if ok else " — LATE"),
                    rooms=rooms,
                    rss_mb=round(rss[-1][1], 1),
                    sustained=ok,
                    **stats,
                )
            )
            if not ok:
                break
            sustained = rooms
        rows.insert(
            0,
            Measurement.single(
                "capacity_rooms_sustained",
                "rooms",
                sustained,
                f"largest tested room count with every room's p90 VAD lateness ≤ {LATE_MS:g} ms "
                f"(tested up to {rooms}{'' if sustained < rooms else ', the limit of this run'})",
            ),
        )
        counts = np.array([r for r, _ in rss], dtype=float)
        mem = np.array([m for _, m in rss])
        slope = float(np.polyfit(counts, mem, 1)[0]) if len(rss) >= 2 else None
        deltas = [(mem[i] - mem[i - 1]) / (counts[i] - counts[i - 1]) for i in range(1, len(rss))]
        rows.insert(
            1,
            Measurement.single(
                "rss_per_room",
                "MB",
                slope,
                f"host RSS slope over rooms (least squares); base {mem[0]:.0f} MB with the VAD loaded",
                rss_by_rooms={int(r): round(float(m), 1) for r, m in rss},
                per_step_mb=[round(d, 1) for d in deltas],
            ),
        )
    finally:
        for child in (host, publisher):
            if child is not None:
                child.stop()
        server.stop()
    return rows


async def _add_room(server: ServerProcess, publisher: _Child, host: _Child, room: str) -> None:
    await publisher.send(f"add {room} {server.token(f'user-{room}', room)}")
    assert (await publisher.expect(60)).startswith("added")
    await host.send(f"add {room} {server.token(f'worker-{room}', room)}")
    json.loads(await host.expect(90))


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"
