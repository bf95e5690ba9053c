"""Load: many rooms × many converse calls through many bridges and one worker; lost or duplicated turns and the
protocol overhead.

Inside the private network namespace: the loopback LiveKit server, ONE `python -m agent start` worker whose
speech is stubbed where compute would dominate (TTS: `tests.e2e_livekit.fast_tts.FastTTSServer`, 40 ms of tone per
request through the real livekit-agents OpenAI TTS plugin; STT: pointed at the same stub, never called, because
the user's turns are typed chat, `lk.chat`, which the worker treats like speech). Each room has its own bridge
(`LiveKitTransport`, its own identity and room connection) and its own user. For every call the user types a
unique utterance as soon as the bridge reports `listening`; a final `wait_for_response=False` call per room
collects anything still queued.

- `load_lost_utterances` / `load_duplicated_utterances`: typed utterances returned by no call / by more than one
  (goal 0). Each returned text is matched against what was typed in that room.
- `load_protocol_overhead`: converse total minus the worker's own first_audio_ms and speak_ms: the RPC request,
  progress packets, the user's chat crossing the room and the RPC response (p90 is the figure to watch).
- `load_call_total`: the whole converse call.
- `load_recovered_turns`: turns a bridge returned from its copy (`mcp_bridge.livekit.turn_ledger`) because the job
  that held them was gone or its answer lost; `load_jobs`: jobs the worker started (one per room when all is well).
  The load average is sampled every 10 s (min / max in the JSON).

Rooms run `concurrency` at a time (one job process each on the worker); a finished room is deleted, which ends its
job. A room whose step has not changed for `STUCK_AFTER` seconds is given up and reported with that step.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from livekit import api, rtc

from mcp_bridge.converse_types import ConverseRequest, ListenOptions, Stage, VoiceError
from mcp_bridge.livekit import LiveKitTransport
from tests.e2e_livekit.fast_tts import FastTTSServer
from tests.e2e_livekit.harness import ServerProcess, start_server, start_worker

from .fallback import linked_worker
from .harness import Measurement
from .settings import bench_settings

AGENT = "voice-mcp-bench-load"
CALL_BOUND = 60.0
WORKER_WAIT = 180.0


@dataclass
class RoomTally:
    typed: list[str] = field(default_factory=list)
    returned: list[str] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)
    overheads: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    recovered: int = 0
    dispatches: int = 0
    step: str = "starting"
    """What the room is waiting for now (a room that stops moving is reported with it)."""
    step_since: float = field(default_factory=time.monotonic)

    def at(self, step: str) -> None:
        self.step, self.step_since = step, time.monotonic()


class ChatUser:
    """A user who only types (`lk.chat`): no microphone track, so the worker's VAD has nothing to chew on. It
    subscribes to the worker's audio like any frontend (livekit-agents plays nothing until somebody does)."""

    def __init__(self, room: rtc.Room) -> None:
        self.room = room

    @classmethod
    async def join(cls, server: ServerProcess, room_name: str, identity: str) -> ChatUser:
        room = rtc.Room()
        await room.connect(server.url, server.token(identity, room_name), options=rtc.RoomOptions(auto_subscribe=True))
        return cls(room)

    async def type(self, text: str) -> None:
        await self.room.local_participant.send_text(text, topic="lk.chat")

    async def leave(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 10)


async def _room(server: ServerProcess, index: int, calls: int, tally: RoomTally) -> RoomTally:
    """One room's conversation. Never raises: a failure is recorded, and what was typed still counts."""
    room = f"load-{index}-{uuid.uuid4().hex[:6]}"
    identity = f"load-user-{index}"
    settings = bench_settings(
        livekit_url=server.url,
        livekit_api_key=server.api_key,
        livekit_api_secret=server.api_secret,
        room=room,
        agent_name=AGENT,
        livekit_timeout=10.0,
        bridge_identity=f"voice-mcp-bridge-{index}",
    )
    transport = LiveKitTransport(settings, worker_start_timeout=WORKER_WAIT)
    user: ChatUser | None = None
    try:
        tally.at("user joining")
        user = await ChatUser.join(server, room, identity)
        tally.at("waiting for a worker that listens to the user")
        await linked_worker(transport, identity, WORKER_WAIT)
        for n in range(calls):
            tally.at(f"call {n}")
            utterance = f"room {index} utterance {n} {uuid.uuid4().hex[:8]}"

            async def on_stage(
                stage: Stage, _detail: str, text: str = utterance, who: ChatUser = user, call: int = n
            ) -> None:
                tally.at(f"call {call}: {stage.value}")
                if stage == Stage.LISTENING and text not in tally.typed:
                    tally.typed.append(text)
                    await who.type(text)

            started = time.perf_counter()
            request = ConverseRequest(message=f"Question {n}?", listen=ListenOptions(max_seconds=20, min_seconds=0))
            try:
                result = await asyncio.wait_for(transport.converse(request, on_stage), CALL_BOUND)
            except (VoiceError, TimeoutError) as exc:
                tally.errors.append(f"call {n}: {type(exc).__name__}: {exc}")
                continue
            took = (time.perf_counter() - started) * 1000
            tally.totals.append(took)
            tally.overheads.append(took - (result.timings.first_audio_ms or 0.0) - (result.timings.speak_ms or 0.0))
            tally.returned.extend(line for line in result.text.splitlines() if line.strip())
        # anything typed but still queued is returned by the next call: make that call (retried after a failure)
        for attempt in range(3):
            tally.at(f"sweep {attempt}")
            try:
                sweep = await asyncio.wait_for(
                    transport.converse(ConverseRequest(message="That is all.", wait_for_response=False), _nothing),
                    CALL_BOUND,
                )
            except (VoiceError, TimeoutError) as exc:
                tally.errors.append(f"sweep {attempt}: {type(exc).__name__}: {exc}")
                continue
            tally.returned.extend(line for line in sweep.text.splitlines() if line.strip())
            break
    except (Exception, asyncio.CancelledError) as exc:
        task = asyncio.current_task()
        if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
            raise  # the watchdog gave the room up
        # a CancelledError nobody asked for: an awaited future was cancelled under the room (recorded, with where)
        tally.errors.append(f"room: {type(exc).__name__} at '{tally.step}': {exc}")
    finally:
        tally.at("leaving")
        tally.recovered = transport.ledger.recovered_total
        tally.dispatches = transport.dispatcher.dispatches
        await transport.aclose()
        if user is not None:
            await user.leave()
        await _delete_room(server, room)
    return tally


STUCK_AFTER = WORKER_WAIT + 60.0
"""A room whose step has not changed for this long (every wait in it is bounded by less) is given up."""


async def _watched(conversation: Coroutine[Any, Any, RoomTally], tally: RoomTally) -> None:
    """Run one room's conversation; if it stops moving, record where and leave it (without waiting for it)."""
    task = asyncio.ensure_future(conversation)
    while not task.done():
        await asyncio.wait({task}, timeout=5.0)
        stuck_for = time.monotonic() - tally.step_since
        if not task.done() and stuck_for > STUCK_AFTER:
            tally.errors.append(f"room: stuck at '{tally.step}' for {stuck_for:.0f} s")
            task.cancel()
            return


async def _delete_room(server: ServerProcess, room: str) -> None:
    """A finished room is deleted, as a deployment's rooms empty out: otherwise the worker keeps its job (a process
    with a VAD, re-joining whenever the loaded machine drops its connection) and every later room shares the
    cores with all earlier ones (seen: 20 rooms' jobs re-connecting in a loop, the last rooms starved)."""
    lkapi = api.LiveKitAPI(server.url, server.api_key, server.api_secret)
    try:
        await asyncio.wait_for(lkapi.room.delete_room(api.DeleteRoomRequest(room=room)), 30)
    except Exception:  # already gone
        pass
    finally:
        await lkapi.aclose()


async def _nothing(stage: Stage, message: str) -> None:
    return None


def _count(tallies: list[RoomTally]) -> tuple[int, int, int]:
    """(typed, lost, duplicated) over all rooms; a returned line may merge several typed turns."""
    typed = lost = duplicated = 0
    for tally in tallies:
        hits: Counter[str] = Counter()
        for line in tally.returned:
            for text in tally.typed:
                if text in line:
                    hits[text] += 1
        typed += len(tally.typed)
        lost += sum(1 for text in tally.typed if hits[text] == 0)
        duplicated += sum(1 for text in tally.typed if hits[text] > 1)
    return typed, lost, duplicated


async def _sample_load(samples: list[float]) -> None:
    while True:
        samples.append(os.getloadavg()[0])
        await asyncio.sleep(10)


def _jobs_started(worker_log: Path) -> int:
    return worker_log.read_text(errors="replace").count('"received job request"') if worker_log.exists() else 0


async def run_load(*, rooms: int, calls: int, concurrency: int, out: Path) -> list[Measurement]:
    logs = out / "logs" / time.strftime("load-%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    server = start_server(logs)
    worker = None
    load_samples: list[float] = []
    sampler = asyncio.create_task(_sample_load(load_samples))
    jobs = 0
    try:
        async with FastTTSServer() as stub:
            worker = await asyncio.to_thread(
                start_worker,
                server,
                logs,
                {"VOICE_MCP_AGENT_NAME": AGENT, "VOICE_MCP_TTS": stub.base_url, "VOICE_MCP_STT": stub.base_url},
            )
            gate = asyncio.Semaphore(concurrency)

            async def one(index: int) -> RoomTally:
                tally = RoomTally()
                async with gate:
                    await _watched(_room(server, index, calls, tally), tally)
                with (logs / "rooms.jsonl").open("a") as finished:  # a run cut short still tells what it saw
                    finished.write(json.dumps({"room": index, **asdict(tally)}) + "\n")
                return tally

            started = time.perf_counter()
            results = await asyncio.gather(*(one(i) for i in range(rooms)), return_exceptions=True)
            wall = time.perf_counter() - started
    finally:
        sampler.cancel()
        if worker is not None:
            jobs = _jobs_started(worker.log)
            worker.stop()
        server.stop()
    tallies = [r for r in results if isinstance(r, RoomTally)]
    failed_rooms = [f"room: {r!r}" for r in results if isinstance(r, BaseException)]
    typed, lost, duplicated = _count(tallies)
    errors = [e for t in tallies for e in t.errors] + failed_rooms
    shape = f"{rooms} rooms × {calls} calls, {concurrency} rooms at a time, one worker, {rooms} bridges"
    load = {
        "load_average_min": round(min(load_samples), 1) if load_samples else None,
        "load_average_max": round(max(load_samples), 1) if load_samples else None,
    }
    return [
        Measurement.single(
            "load_lost_utterances", "count", lost, f"{shape}: typed {typed}, returned by no call (goal 0)",
            typed=typed, failed_calls=len(errors), errors=errors[:20], wall_s=round(wall, 1),
            rooms_finished=sum(1 for t in tallies if not any(e.startswith("room:") for e in t.errors)),
            logs=str(logs), **load,
        ),
        Measurement.single(
            "load_duplicated_utterances", "count", duplicated, "returned by more than one call (goal 0)"
        ),
        Measurement.of(
            "load_protocol_overhead", "ms", [o for t in tallies for o in t.overheads],
            "converse total − worker first_audio_ms − speak_ms: RPC, progress, the user's chat, the response",
        ),
        Measurement.of("load_call_total", "ms", [o for t in tallies for o in t.totals], "the whole converse call"),
        Measurement.single("load_failed_calls", "count", len(errors), "calls that ended in an error (see JSON)"),
        Measurement.single(
            "load_recovered_turns", "count", sum(t.recovered for t in tallies),
            "returned by a bridge from its copy: the job that held them was gone or its answer lost",
        ),
        Measurement.single(
            "load_jobs", "count", jobs, f"jobs the worker started for {rooms} rooms (bridges dispatched "
            f"{sum(t.dispatches for t in tallies)} times)",
        ),
    ]
