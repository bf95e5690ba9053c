"""Side by side on the same replies: end of speech → `converse` returned, the local loop vs through a room.

Issue 11 asks for the room path within 100 ms of the local loop on the same reply. This part answers each reply
(Piper, ~1 s and ~3 s, `bench.speech.REPLY_TEXTS`) on every side in turn, interleaved, so load changes hit every
side alike:

- `local`: a real `LocalTransport` on the private PulseAudio (as `bench.local_loop`): the reply is played into the
  virtual microphone a second after `listening`;
- `room`: the bridge's `LiveKitTransport` → this checkout's worker (`python -m agent start`) in the loopback
  room; a room participant speaks the reply a second after `listening` (as `bench.room`);
- `room_before` (only with `BENCH_BEFORE_ROOT=<another checkout>`): the same through that checkout's worker, in
  its own room, in the same run — the before/after pair.

`BENCH_TURNS_RULE=silence` runs every side with `VOICE_MCP_TURN_DETECTION=silence` (default: the product
default, the end-of-turn model); `BENCH_TURNS_ITERATIONS` sets the replies per length and side.

Rows: `eos_to_return_{side}_{N}s` and `_all` (median/p90, the load average at each exchange in `extra.load`);
for the room sides, where the time goes, from the worker's `turn stages` log line (`agent.turn_stages`), each
from the reply's real end of speech: `room_stage_{stage}[_before]` for `vad_dated_end` (where the VAD dates the
end of speech: the audio path's lag plus the VAD's dating error), `vad_event` (its END_OF_SPEECH), `transcript`
(last segment's transcript out), `session_told` (the session got that END_OF_SPEECH), `decided` (the end-of-turn
model's last answer), `committed` (turn committed), `returned` (converse returned on the bridge).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from agent.speech import build_vad
from agent.turn_stages import MARKER
from mcp_bridge.converse_types import ConverseRequest, ListenOptions
from mcp_bridge.livekit import LiveKitTransport
from mcp_bridge.local import LocalTransport
from tests.e2e_livekit.harness import ServerProcess, TestUser, WorkerProcess, start_server

from .capacity_worker import REPO, start_bench_worker
from .harness import Measurement
from .local_loop import _exchange as local_exchange
from .room import BOUND, _answer, _Listening, _transport, _warm_up
from .settings import bench_settings
from .speech import REPLY_TEXTS, Reply, Speech, wer
from .virtual_audio import Tap, VirtualAudioSession

log = logging.getLogger(__name__)

STAGES = ("vad_dated_end", "vad_event", "transcript", "session_told", "decided", "committed", "returned")


class _RoomSide:
    def __init__(self, name: str, server: ServerProcess, worker: WorkerProcess, agent_name: str) -> None:
        self.name = name
        self.server = server
        self.worker = worker
        self.agent_name = agent_name
        self.user: TestUser | None = None
        self.transport: LiveKitTransport | None = None
        self._seen_lines = 0

    async def start(self) -> None:
        room = f"bench-turns-{self.name}-{uuid.uuid4().hex[:6]}"
        self.user = await TestUser.join(self.server, room, identity=f"bench-{self.name}-user")
        self.transport = _transport(self.server, room, self.agent_name)
        await _warm_up(self.transport)
        self._seen_lines = len(self._stage_lines())

    def _stage_lines(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for line in self.worker.output().splitlines():
            if MARKER not in line:
                continue
            message = line
            with contextlib.suppress(ValueError, KeyError, TypeError):
                message = json.loads(line)["message"]
            with contextlib.suppress(ValueError):
                found.append(json.loads(message.split(MARKER, 1)[1]))
        return found

    async def exchange(self, reply: Reply) -> tuple[float | None, str, dict[str, float | None]]:
        assert self.user is not None and self.transport is not None
        listening = _Listening()
        call = asyncio.create_task(
            self.transport.converse(
                ConverseRequest(message="Which one?", listen=ListenOptions(max_seconds=60)), listening
            )
        )
        await asyncio.wait_for(listening.event.wait(), BOUND)
        await asyncio.sleep(1.0)
        speaking = asyncio.create_task(_answer(self.user, reply))
        result = await asyncio.wait_for(call, BOUND)
        done = time.perf_counter()
        ended_at = await speaking
        wall = time.time() - time.perf_counter()  # perf_counter → unix seconds
        speech_end = ended_at + wall
        stages: dict[str, float | None] = dict.fromkeys(STAGES)
        stages["returned"] = (done - ended_at) * 1000
        await asyncio.sleep(0.2)  # the job's log line reaches the worker's log
        lines = self._stage_lines()
        new, self._seen_lines = lines[self._seen_lines :], len(lines)
        if new:
            last = new[-1]
            dated = last.get("speech_ended")
            if isinstance(dated, (int, float)):
                stages["vad_dated_end"] = (dated - speech_end) * 1000
                for stage in ("vad_event", "transcript", "session_told", "decided", "committed"):
                    after = last.get(f"{stage}_ms")
                    if isinstance(after, (int, float)):
                        stages[stage] = (dated - speech_end) * 1000 + after
        if len(new) != 1:
            log.warning("%s: %d turn(s) for one reply %r", self.name, len(new), reply.text)
        returned = stages["returned"] if result.heard_speech else None
        return returned, result.text, stages

    async def aclose(self) -> None:
        if self.transport is not None:
            await self.transport.aclose()
        if self.user is not None:
            await self.user.leave()


def _rule() -> str:
    return os.environ.get("BENCH_TURNS_RULE") or "model"


async def run_turns(speech: Speech, *, iterations: int, out: Path) -> list[Measurement]:
    logs = out / "logs" / time.strftime("turns-%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    server = start_server(logs)
    workers: list[WorkerProcess] = []
    rooms: list[_RoomSide] = []
    before = os.environ.get("BENCH_BEFORE_ROOT")
    rule = _rule()
    try:
        plans = [("room", REPO, "voice-mcp")]
        if before:
            plans.append(("room_before", Path(before), "voice-mcp-before"))
        started = await asyncio.gather(
            *(
                asyncio.to_thread(
                    start_bench_worker,
                    server,
                    logs,
                    name,
                    root=root,
                    extra_env={"VOICE_MCP_AGENT_NAME": agent, "VOICE_MCP_TURN_DETECTION": rule},
                )
                for name, root, agent in plans
            )
        )
        workers += started
        for (name, _root, agent), worker in zip(plans, started, strict=True):
            side = _RoomSide(name, server, worker, agent)
            rooms.append(side)
            await side.start()
        return await _interleaved(speech, rooms, iterations)
    finally:
        for side in rooms:
            with contextlib.suppress(Exception):
                await side.aclose()
        for worker in workers:
            worker.stop()
        server.stop()


async def _interleaved(speech: Speech, rooms: list[_RoomSide], iterations: int) -> list[Measurement]:
    sides = ["local"] + [r.name for r in rooms]
    returned: dict[str, dict[int, list[float | None]]] = {s: {1: [], 3: []} for s in sides}
    errors: dict[str, list[float]] = {s: [] for s in sides}
    loads: dict[str, list[float]] = {s: [] for s in sides}
    stages: dict[str, dict[str, list[float | None]]] = {r.name: {st: [] for st in STAGES} for r in rooms}
    local_own: list[float | None] = []
    failures: dict[str, list[str]] = {s: [] for s in sides}
    vad = build_vad(bench_settings())
    with VirtualAudioSession() as audio, TemporaryDirectory(prefix="vmcp-bench-turns-") as tmp:
        settings = bench_settings(data_dir=Path(tmp), turn_detection=_rule())
        transport = LocalTransport(settings, stt=speech.stt, tts=speech.tts, vad=vad)
        tap = Tap("vspeaker.monitor").start()
        try:
            await asyncio.sleep(1.0)
            for seconds in (1, 3):
                texts = REPLY_TEXTS[seconds]
                for i in range(iterations):
                    reply = await speech.reply(texts[i % len(texts)])
                    order = sides[i % len(sides) :] + sides[: i % len(sides)]  # rotate who goes first
                    for side in order:
                        loads[side].append(os.getloadavg()[0])
                        if side == "local":
                            tap.clear()
                            result, measured = await local_exchange(transport, audio, tap, reply)
                            returned[side][seconds].append(measured["eos_to_return"] if result.heard_speech else None)
                            local_own.append(result.timings.end_of_speech_to_result_ms)
                            errors[side].append(wer(reply.text, result.text))
                            continue
                        room = next(r for r in rooms if r.name == side)
                        try:
                            took, text, got = await room.exchange(reply)
                        except Exception as exc:  # one lost call (a starved worker) must not lose the run
                            log.warning("%s: %r failed: %s", side, reply.text, exc)
                            failures[side].append(f"{reply.text!r}: {exc}")
                            took, text, got = None, "", dict.fromkeys(STAGES)
                        returned[side][seconds].append(took)
                        errors[side].append(wer(reply.text, text))
                        for stage, value in got.items():
                            stages[side][stage].append(value)
        finally:
            tap.stop()
            await transport.aclose()
    rows: list[Measurement] = []
    for side in sides:
        for seconds in (1, 3):
            rows.append(
                Measurement.of(
                    f"eos_to_return_{side}_{seconds}s",
                    "ms",
                    returned[side][seconds],
                    f"same replies, interleaved: the reply (~{seconds} s) ends → converse returned ({side})",
                )
            )
        both = returned[side][1] + returned[side][3]
        rows.append(
            Measurement.of(
                f"eos_to_return_{side}_all",
                "ms",
                both,
                f"{side}, turn detection {_rule()}: all replies; WER median "
                f"{sorted(errors[side])[len(errors[side]) // 2]:.3f}",
                load=[round(v, 2) for v in loads[side]],
                wer=errors[side],
                failures=failures[side],
            )
        )
    rows.append(
        Measurement.of("eos_to_result_local_own", "ms", local_own, "local transport's end_of_speech_to_result_ms")
    )
    for room in rooms:
        suffix = "" if room.name == "room" else "_" + room.name.removeprefix("room_")
        for stage in STAGES:
            rows.append(
                Measurement.of(
                    f"room_stage_{stage}{suffix}",
                    "ms",
                    stages[room.name][stage],
                    f"real end of speech → {stage} ({room.name}, from the worker's turn stages)",
                )
            )
    return rows
