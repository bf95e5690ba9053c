"""Processes and participants for the LiveKit end-to-end tests: the loopback server, the real worker, a user.

Everything runs for real: `python -m tests.lkserver` (the loopback LiveKit-protocol server), `python -m agent
start` (the worker, its own process group so a test can kill it outright), and `TestUser`, a `livekit.rtc.Room`
participant that records the worker's audio and speaks Piper-synthesised replies into the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api, rtc

from agent.protocol import TOPIC_TRACK_HEARD, WORKER_IDENTITY_PREFIX, TrackHeard

REPO = Path(__file__).resolve().parents[2]
API_KEY = "devkey"
API_SECRET = "voice-mcp-e2e-secret-long-enough-for-hs256"
NETNS_INTERFACE = "lkns0"  # created by tests/netns/run
USER_RATE = 48000


def inside_test_netns() -> bool:
    return any(name == NETNS_INTERFACE for _index, name in socket.if_nameindex())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    port: int
    api_key: str
    api_secret: str
    proc: subprocess.Popen[bytes]
    log: Path

    def token(self, identity: str, room: str) -> str:
        grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
        return api.AccessToken(self.api_key, self.api_secret).with_identity(identity).with_grants(grants).to_jwt()

    def stop(self) -> None:
        _stop(self.proc)


def start_server(log_dir: Path, port: int | None = None) -> ServerProcess:
    """`python -m tests.lkserver` from this repository (or from $LKSERVER_ROOT, to debug another copy)."""
    port = port or free_port()
    log = log_dir / f"lkserver-{port}-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.lkserver", "--host", "127.0.0.1", "--port", str(port),
         "--keys", f"{API_KEY}:{API_SECRET}", "--log-level", "INFO"],
        cwd=os.environ.get("LKSERVER_ROOT", REPO), stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "lkserver ready" in log.read_text(errors="replace"):
            return ServerProcess(f"ws://127.0.0.1:{port}", port, API_KEY, API_SECRET, proc, log)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"the loopback LiveKit server did not start:\n{log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class WorkerProcess:
    """`python -m agent start` in its own process group (so its job processes die with it)."""

    proc: subprocess.Popen[bytes]
    log: Path
    _offset: int = 0

    def registered(self) -> bool:
        return '"registered worker"' in self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the worker and its job processes: no goodbye to the room, like a crash."""
        _stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        _stop(self.proc)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def job_pid(self, room: str) -> int | None:
        """The process id of the job that serves `room` (from the worker's JSON log), None before it is ready; the
        worker's own with `VOICE_MCP_JOB_EXECUTOR=thread`."""
        for line in self.output().splitlines():
            if f"voice-mcp worker ready in room {room} " not in line:
                continue
            with contextlib.suppress(ValueError, KeyError, TypeError):
                return int(json.loads(line)["pid"])
        return None


PASSED_SETTINGS = ("VOICE_MCP_JOB_EXECUTOR",)
"""The worker settings a test run hands on to its workers: `VOICE_MCP_JOB_EXECUTOR=thread tests/netns/run
.venv/bin/pytest tests/e2e_livekit` runs the room tests with every job in a thread of the worker process. Every
other VOICE_MCP_* and LIVEKIT_* variable of the caller's environment is dropped (the tests set their own)."""


def start_worker(server: ServerProcess, log_dir: Path, extra_env: dict[str, str] | None = None) -> WorkerProcess:
    """`extra_env` wins over everything, e.g. `VOICE_MCP_JOB_EXECUTOR=process` for a test that kills a job."""
    index = len(list(log_dir.glob("worker-*.log")))
    log = log_dir / f"worker-{index}.log"
    env = {
        k: v
        for k, v in os.environ.items()
        if (not k.startswith(("VOICE_MCP_", "LIVEKIT_")) or k in PASSED_SETTINGS) and k != "OPENAI_API_KEY"
    }
    env.update(
        LIVEKIT_URL=server.url,
        LIVEKIT_API_KEY=server.api_key,
        LIVEKIT_API_SECRET=server.api_secret,
        VOICE_MCP_WORKER_PORT="0",
        VOICE_MCP_TTS="piper",
        VOICE_MCP_STT="faster-whisper",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", "start"],
        cwd=log_dir,  # no .env from the repository
        env={**env, "PYTHONPATH": str(REPO)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = WorkerProcess(proc, log)
    # the worker registers once its idle job process is warm (models, text tools, a silent synthesis): on two
    # shared, busy cores that alone can take minutes
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if worker.registered():
            return worker
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    worker.kill()
    raise RuntimeError(f"the worker did not register:\n{worker.output()[-5000:]}")


async def publisher_hears_of_subscriptions(server: ServerProcess, within: float = 30.0) -> bool:
    """Whether the server tells a publisher that its track was subscribed (`SignalResponse.track_subscribed`).

    livekit-agents' room audio output waits for that notice before it plays any agent speech, so without it
    every converse call would hang in "speaking". Checked once per session to fail with the reason instead.
    """
    room = f"probe-{os.getpid()}-{time.monotonic_ns()}"
    publisher, subscriber = rtc.Room(), rtc.Room()
    source = rtc.AudioSource(USER_RATE, 1)
    feeder: asyncio.Task[None] | None = None
    try:
        await publisher.connect(server.url, server.token("probe-publisher", room))
        await subscriber.connect(server.url, server.token("probe-subscriber", room))
        track = rtc.LocalAudioTrack.create_audio_track("probe", source)
        publication = await publisher.local_participant.publish_track(track, rtc.TrackPublishOptions())
        silence = np.zeros(USER_RATE // 100, dtype=np.int16)

        async def feed() -> None:
            while True:
                await source.capture_frame(rtc.AudioFrame(silence.tobytes(), USER_RATE, 1, silence.size))

        feeder = asyncio.get_running_loop().create_task(feed())
        try:
            await asyncio.wait_for(publication.wait_for_subscription(), within)
            return True
        except TimeoutError:
            return False
    finally:
        # the feeder stopped and the source closed before the rooms go: a helper once saw a session hang here
        # with the source's capture thread spinning after its room had closed
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(feeder, 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(source.aclose(), 10)
        for r in (publisher, subscriber):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r.disconnect(), 10)


# --- the user ----------------------------------------------------------------------------------------------------


@dataclass
class Heard:
    """Audio the user received from the worker (48 kHz mono int16), with arrival times."""

    chunks: list[tuple[float, np.ndarray]] = field(default_factory=list)

    def samples(self, since: float = 0.0) -> np.ndarray:
        parts = [c for t, c in self.chunks if t >= since]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)

    def voiced(self, since: float = 0.0, level: int = 500) -> np.ndarray:
        """The received audio from the first to the last loud 10 ms frame (silence trimmed off)."""
        samples = self.samples(since)
        frame = USER_RATE // 100
        loud = [i for i in range(0, samples.size - frame, frame) if np.abs(samples[i : i + frame]).max() > level]
        if not loud:
            return np.zeros(0, dtype=np.int16)
        return samples[max(loud[0] - frame * 20, 0) : loud[-1] + frame * 40]


def worker_audio(track: rtc.Track, participant: rtc.RemoteParticipant) -> bool:
    """`track` is an audio track of a voice-mcp worker (one a listener tells the worker it hears)."""
    return track.kind == rtc.TrackKind.KIND_AUDIO and participant.identity.startswith(WORKER_IDENTITY_PREFIX)


async def tell_heard(room: rtc.Room, worker: str, track_sid: str) -> None:
    """Tell `worker` its track `track_sid` is heard here (`agent.protocol.TOPIC_TRACK_HEARD`, as the web page does)."""
    await room.local_participant.publish_data(
        TrackHeard(track_sid=track_sid).model_dump_json(),
        reliable=True,
        destination_identities=[worker],
        topic=TOPIC_TRACK_HEARD,
    )


class TestUser:
    """A person in the room: hears the worker's audio track, reads transcriptions, speaks audio frames."""

    __test__ = False  # not a pytest class

    def __init__(self, room: rtc.Room) -> None:
        self.room = room
        self.heard = Heard()
        self.transcripts: list[tuple[str, dict[str, str], str]] = []  # (sender identity, attributes, text)
        # the deprecated rtc.Transcription packets: (participant identity, segment id, final, text)
        self.legacy_transcripts: list[tuple[str, str, bool, str]] = []
        self._source = rtc.AudioSource(USER_RATE, 1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._streams: dict[str, rtc.AudioStream] = {}
        self.told_heard: list[str] = []
        """Sids of the worker's tracks this user told the worker it hears (`TOPIC_TRACK_HEARD`), in order."""

    @classmethod
    async def join(cls, server: ServerProcess, room_name: str, identity: str = "alice") -> TestUser:
        room = rtc.Room()
        user = cls(room)
        room.on("track_subscribed", user._on_track)
        room.on("track_unsubscribed", user._on_track_gone)
        room.register_text_stream_handler("lk.transcription", user._on_transcription)
        room.on("transcription_received", user._on_legacy_transcription)
        await room.connect(server.url, server.token(identity, room_name), options=rtc.RoomOptions(auto_subscribe=True))
        track = rtc.LocalAudioTrack.create_audio_track("microphone", user._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, options)
        return user

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_track(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            stream = rtc.AudioStream(track, sample_rate=USER_RATE, num_channels=1)
            self._streams[publication.sid] = stream
            tell = participant.identity if worker_audio(track, participant) else None
            self._spawn(self._record(stream, publication.sid, tell))

    def _on_track_gone(
        self, track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant
    ) -> None:
        """A track that is gone is no longer heard: its stream would go on yielding silence between the frames of
        the track that replaces it (the worker unpublishes its track while quiet)."""
        stream = self._streams.pop(publication.sid, None)
        if stream is not None:
            self._spawn(stream.aclose())

    async def _record(self, stream: rtc.AudioStream, sid: str, worker: str | None) -> None:
        async for event in stream:
            data = np.frombuffer(event.frame.data, dtype=np.int16).copy()
            self.heard.chunks.append((time.monotonic(), data))
            if worker is not None:  # as the web page does: the worker's track is heard from now on
                await tell_heard(self.room, worker, sid)
                self.told_heard.append(sid)
                worker = None

    def _on_transcription(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        async def read() -> None:
            text = await reader.read_all()
            self.transcripts.append((participant_identity, dict(reader.info.attributes or {}), text))

        self._spawn(read())

    def _on_legacy_transcription(
        self, segments: list[rtc.TranscriptionSegment], participant: rtc.Participant | None, _: object
    ) -> None:
        identity = participant.identity if participant is not None else ""
        self.legacy_transcripts.extend((identity, s.id, s.final, s.text) for s in segments)

    @property
    def microphone_sid(self) -> str:
        """The sid of the track this user speaks into."""
        return next(iter(self.room.local_participant.track_publications))

    async def speak(self, frame: rtc.AudioFrame, trailing_silence: float = 2.0) -> None:
        """Play `frame` into the room in real time (10 ms frames), then silence so the turn can end."""
        samples = np.frombuffer(frame.data, dtype=np.int16)
        if frame.sample_rate != USER_RATE:
            resampler = rtc.AudioResampler(frame.sample_rate, USER_RATE, num_channels=1)
            out = [*resampler.push(frame), *resampler.flush()]
            samples = np.concatenate([np.frombuffer(f.data, dtype=np.int16) for f in out])
        silence = np.zeros(int(USER_RATE * trailing_silence), dtype=np.int16)
        samples = np.concatenate([np.zeros(USER_RATE // 5, dtype=np.int16), samples, silence])
        step = USER_RATE // 100
        for i in range(0, samples.size - step + 1, step):
            chunk = samples[i : i + step]
            await self._source.capture_frame(rtc.AudioFrame(chunk.tobytes(), USER_RATE, 1, step))

    async def leave(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 10)


def agent_transcript_text(user: TestUser) -> str:
    """Everything the worker published as its own transcription (what a LiveKit frontend shows for the agent)."""
    return " ".join(
        text for sender, _attrs, text in user.transcripts if sender.startswith("voice-mcp-agent-")
    )
