"""(b) converse called → first TTS audio through a LiveKit room, and (c) the bridge↔worker round trip.

Everything real, inside the private network namespace: the loopback LiveKit server (`python -m tests.lkserver`),
two `python -m agent start` workers, the bridge's `LiveKitTransport` and a user (`TestUser`, who subscribes to
the worker's audio and records the arrival time of every frame), all from `tests.e2e_livekit.harness`.

- (b) `first_audio_room_participant`: converse called on the bridge → first loud frame arriving at the user
  (worker Piper TTS → room → subscribed participant); `first_audio_room_worker` is the worker's own
  `first_audio_ms` (its `say()` → the agent state turning `speaking`, i.e. the first frame played into the room).
- (b) `first_audio_room_participant_after_quiet`, `first_audio_room_worker_after_quiet`: the same after more than
  `capacity_worker.TRACK_IDLE` (15 s) of quiet, when the worker's audio track has been unpublished and must come back
  (publish, the user's subscription) before the first word plays.
- (a) `eos_to_return_room_Ns`: the user (a room participant) answers a converse call with a Piper reply of about
  N seconds, as in the local part: converse returned − the moment the reply's last voiced sample left the user's
  audio source (its capture time plus what the source still had queued). `eos_to_result_room_Ns` is the worker's
  own `end_of_speech_to_result_ms` (its end of speech → the turn's transcript). Compare with
  `eos_to_return_local_Ns` (same replies, local loop).
- (c) the second worker's TTS is `tests.e2e_livekit.fast_tts.FastTTSServer` (a real livekit-agents OpenAI TTS
  plugin against a loopback server that answers every request at once with 40 ms of tone), and nothing is
  transcribed (`wait_for_response=False`). `bridge_worker_roundtrip_stub` is the whole converse call;
  `bridge_worker_overhead_stub` subtracts the worker's own first_audio_ms and speak_ms (what remains is RPC,
  progress packets and session plumbing); `bridge_worker_ping_rtt` is the bridge's ping RPC to the worker.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import numpy as np
from livekit import rtc

from agent.speech.audio import resample_int16
from mcp_bridge.converse_types import ConverseRequest, ListenOptions, ProviderError, Stage
from mcp_bridge.livekit import LiveKitTransport
from mcp_bridge.livekit.workers import ping
from tests.e2e_livekit.fast_tts import FastTTSServer
from tests.e2e_livekit.harness import ServerProcess, TestUser, WorkerProcess, start_server, start_worker

from .capacity_worker import TRACK_IDLE
from .harness import Measurement
from .settings import bench_settings
from .speech import REPLY_TEXTS, Reply, Speech, wer

MESSAGE = "Which file should I open first? The configuration or the tests?"
STUB_MESSAGE = "Done."
STUB_AGENT = "voice-mcp-bench-stub"
BOUND = 180.0


async def _nothing(stage: Stage, message: str) -> None:
    return None


def _first_loud(user: TestUser, after: float, level: int = 1000) -> float | None:
    for arrived, chunk in list(user.heard.chunks):
        if arrived >= after and chunk.size and int(np.abs(chunk.astype(np.int32)).max()) > level:
            return arrived
    return None


async def _warm_up(transport: LiveKitTransport) -> None:
    """One unmeasured call: dispatch, job start, first synthesis."""
    try:
        await asyncio.wait_for(
            transport.converse(ConverseRequest(message="Ready.", wait_for_response=False), _nothing), BOUND
        )
    except ProviderError as exc:
        raise RuntimeError(
            f"{exc} — the worker played no audio into the room. livekit-agents plays only once the server has "
            "told the worker its audio track was subscribed (SignalResponse.track_subscribed); check that the "
            "LiveKit server sends it (see docs/performance.md)"
        ) from exc


def _transport(server: ServerProcess, room: str, agent_name: str) -> LiveKitTransport:
    settings = bench_settings(
        livekit_url=server.url,
        livekit_api_key=server.api_key,
        livekit_api_secret=server.api_secret,
        room=room,
        agent_name=agent_name,
        livekit_timeout=10.0,
    )
    return LiveKitTransport(settings, worker_start_timeout=BOUND)


async def _first_audio(server: ServerProcess, iterations: int, *, quiet: float = 0.5) -> list[Measurement]:
    """`quiet`: seconds without speech before each call (past `TRACK_IDLE` the worker's track is unpublished and
    has to come back first: the bench user tells the worker when it hears it, as the page does)."""
    room = f"bench-{uuid.uuid4().hex[:8]}"
    user = await TestUser.join(server, room, identity="bench-user")
    transport = _transport(server, room, "voice-mcp")
    participant: list[float | None] = []
    worker: list[float | None] = []
    suffix = "" if quiet < TRACK_IDLE else "_after_quiet"
    try:
        await _warm_up(transport)
        for _ in range(iterations):
            await asyncio.sleep(quiet)
            called = time.monotonic()
            result = await asyncio.wait_for(
                transport.converse(ConverseRequest(message=MESSAGE, wait_for_response=False), _nothing), BOUND
            )
            await asyncio.sleep(0.3)
            heard = _first_loud(user, called)
            participant.append((heard - called) * 1000 if heard is not None else None)
            worker.append(result.timings.first_audio_ms)
    finally:
        await transport.aclose()
        await user.leave()
    return [
        Measurement.of(
            f"first_audio_room_participant{suffix}",
            "ms",
            participant,
            f"(b) bridge converse called after {quiet:g} s of quiet → first loud frame at the subscribed user "
            "(worker Piper TTS)",
            chart=True,
        ),
        Measurement.of(
            f"first_audio_room_worker{suffix}",
            "ms",
            worker,
            "(b) the worker's first_audio_ms: say() → first frame played into the room",
            chart=True,
        ),
    ]


class _Listening:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def __call__(self, stage: Stage, message: str) -> None:
        if stage == Stage.LISTENING:
            self.event.set()


async def _answer(user: TestUser, reply: Reply) -> float:
    """Speak `reply` into the room in real time; returns when (perf_counter) its last voiced sample left the
    user's audio source. Then trailing silence, so the turn can end."""
    source = user._source  # the harness's microphone source: the queue tells when a frame really plays
    rate = 48000
    step = rate // 100
    samples = resample_int16(reply.pcm, 16000, rate)
    voiced_end = int(reply.voiced_end * rate)
    ended_at = 0.0
    tail = np.zeros(rate * 4, dtype=np.int16)
    audio = np.concatenate([samples, tail])
    for i in range(0, audio.size - step + 1, step):
        await source.capture_frame(rtc.AudioFrame(audio[i : i + step].tobytes(), rate, 1, step))
        if i < voiced_end <= i + step:
            ended_at = time.perf_counter() + source.queued_duration
    return ended_at


async def _eos_to_return(server: ServerProcess, speech: Speech, iterations: int) -> list[Measurement]:
    room = f"bench-eos-{uuid.uuid4().hex[:8]}"
    user = await TestUser.join(server, room, identity="bench-eos-user")
    transport = _transport(server, room, "voice-mcp")
    rows: list[Measurement] = []
    try:
        await _warm_up(transport)
        for seconds in (1, 3):
            texts = REPLY_TEXTS[seconds]
            returned: list[float | None] = []
            worker_side: list[float | None] = []
            errors: list[float] = []
            for i in range(iterations):
                reply = await speech.reply(texts[i % len(texts)])
                listening = _Listening()
                call = asyncio.create_task(
                    transport.converse(
                        ConverseRequest(message="Which one?", listen=ListenOptions(max_seconds=60)), listening
                    )
                )
                await asyncio.wait_for(listening.event.wait(), BOUND)
                await asyncio.sleep(1.0)  # as the local part: the user answers a second after `listening`
                speaking = asyncio.create_task(_answer(user, reply))
                result = await asyncio.wait_for(call, BOUND)
                done = time.perf_counter()
                ended_at = await speaking
                returned.append((done - ended_at) * 1000 if result.heard_speech else None)
                worker_side.append(result.timings.end_of_speech_to_result_ms)
                errors.append(wer(reply.text, result.text))
            rows += [
                Measurement.of(
                    f"eos_to_return_room_{seconds}s",
                    "ms",
                    returned,
                    f"(a) through the room: the user's reply (~{seconds} s) ends → converse returned; WER median "
                    f"{sorted(errors)[len(errors) // 2]:.3f}",
                    chart=True,
                    wer=errors,
                ),
                Measurement.of(
                    f"eos_to_result_room_{seconds}s",
                    "ms",
                    worker_side,
                    "(a) the worker's end_of_speech_to_result_ms",
                ),
            ]
    finally:
        await transport.aclose()
        await user.leave()
    return rows


async def _round_trip(server: ServerProcess, iterations: int) -> list[Measurement]:
    room = f"bench-stub-{uuid.uuid4().hex[:8]}"
    user = await TestUser.join(server, room, identity="bench-stub-user")
    transport = _transport(server, room, STUB_AGENT)
    total: list[float | None] = []
    overhead: list[float | None] = []
    rtt: list[float | None] = []
    try:
        request = ConverseRequest(message=STUB_MESSAGE, wait_for_response=False)
        await _warm_up(transport)
        handle = await transport.ensure_worker(30.0)
        room_obj = transport.link.room
        assert room_obj is not None
        for _ in range(iterations):
            started = time.perf_counter()
            result = await asyncio.wait_for(transport.converse(request, _nothing), BOUND)
            took = (time.perf_counter() - started) * 1000
            total.append(took)
            t = result.timings
            overhead.append(took - (t.first_audio_ms or 0.0) - (t.speak_ms or 0.0))
            started = time.perf_counter()
            answer = await ping(room_obj, handle.identity)
            rtt.append((time.perf_counter() - started) * 1000 if answer.reply is not None else None)
    finally:
        await transport.aclose()
        await user.leave()
    return [
        Measurement.of(
            "bridge_worker_roundtrip_stub",
            "ms",
            total,
            "(c) converse call with instant TTS (40 ms tone), no listening: bridge → worker → bridge",
            chart=True,
        ),
        Measurement.of(
            "bridge_worker_overhead_stub",
            "ms",
            overhead,
            "(c) the round trip minus the worker's first_audio_ms and speak_ms: RPC and session plumbing",
            chart=True,
        ),
        Measurement.of("bridge_worker_ping_rtt", "ms", rtt, "(c) the bridge's ping RPC to the worker", chart=True),
    ]


async def run_room(speech: Speech, *, iterations: int, out: Path) -> list[Measurement]:
    logs = out / "logs" / time.strftime("room-%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    server = start_server(logs)
    workers: list[WorkerProcess] = []
    try:
        async with FastTTSServer() as stub:
            starting = [
                asyncio.to_thread(start_worker, server, logs, {"VOICE_MCP_AGENT_TRACK_IDLE": str(TRACK_IDLE)}),
                asyncio.to_thread(
                    start_worker,
                    server,
                    logs,
                    {"VOICE_MCP_AGENT_NAME": STUB_AGENT, "VOICE_MCP_TTS": stub.base_url},
                ),
            ]
            for started in await asyncio.gather(*starting, return_exceptions=True):
                if isinstance(started, BaseException):
                    raise started
                workers.append(started)
            rows = await _first_audio(server, iterations)
            rows += await _first_audio(server, max(iterations // 2, 1), quiet=TRACK_IDLE + 2.0)
            rows += await _eos_to_return(server, speech, max(iterations // 2, 1))
            rows += await _round_trip(server, iterations)
    finally:
        for worker in workers:
            worker.stop()
        server.stop()
    return rows
