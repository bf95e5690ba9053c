"""The worker side of the capacity benchmark: `python -m bench.capacity_host URL`, one process for every room.

Like a voice-mcp worker, it builds one Silero VAD (`agent.speech.build_room_vad`, the worker's settings) and gives each
room session its own `vad.stream()`; each session joins its room, subscribes to the user's microphone and pushes
the received frames (16 kHz in 50 ms frames, what the worker's RoomIO asks for: `agent.room_session`) into its VAD
stream, reading the VAD's events as the AgentSession does. Commands on stdin, one JSON answer per line on stdout:

- `add ROOM TOKEN` → `{"added": ROOM}` once the user's track is subscribed;
- `measure SECONDS` → lateness statistics over the next SECONDS (see `Session.lateness`);
- `quit`.

Lateness of one VAD window: the moment its INFERENCE_DONE event reached the session − the moment the window's
last sample was due. "Due" is the real-time audio clock of that session, anchored at the earliest arrival ever
seen: due(s) = min over frames (arrival − audio position at the frame's end) + s / 16000. So lateness is how far
the VAD's verdict trails the live audio: network and forwarding delay beyond the best case, frames queued in the
stream, inference time. It grows without bound once the process cannot keep up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time

from livekit import rtc
from livekit.agents import vad as lk_vad

from agent.speech import build_room_vad

from .settings import bench_settings

INPUT_RATE = 16000
FRAME_MS = 50
VAD_RATE = 16000


class Session:
    def __init__(self, room_name: str, vad: lk_vad.VAD) -> None:
        self.room_name = room_name
        self.room = rtc.Room()
        self.vad_stream = vad.stream()
        self.subscribed = asyncio.Event()
        self.samples_in = 0
        self.anchor: float | None = None
        self.lateness: list[float] = []
        self.inference: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def join(self, url: str, token: str) -> None:
        self.room.on("track_subscribed", self._on_track)
        await self.room.connect(url, token, options=rtc.RoomOptions(auto_subscribe=True))
        self._tasks.append(asyncio.create_task(self._events()))

    def _on_track(self, track: rtc.Track, *_: object) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO and not self.subscribed.is_set():
            stream = rtc.AudioStream(track, sample_rate=INPUT_RATE, num_channels=1, frame_size_ms=FRAME_MS)
            self._tasks.append(asyncio.create_task(self._frames(stream)))
            self.subscribed.set()

    async def _frames(self, stream: rtc.AudioStream) -> None:
        async for event in stream:
            now = time.perf_counter()
            self.samples_in += event.frame.samples_per_channel
            lag = now - self.samples_in / INPUT_RATE
            self.anchor = lag if self.anchor is None else min(self.anchor, lag)
            self.vad_stream.push_frame(event.frame)

    async def _events(self) -> None:
        async for event in self.vad_stream:
            if event.type != lk_vad.VADEventType.INFERENCE_DONE or self.anchor is None:
                continue
            due = self.anchor + event.samples_index / VAD_RATE
            self.lateness.append(time.perf_counter() - due)
            self.inference.append(event.inference_duration)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.vad_stream.aclose()
        with contextlib.suppress(Exception):
            await self.room.disconnect()


def _say(obj: object) -> None:
    print(json.dumps(obj), flush=True)


async def main(url: str) -> None:
    vad = build_room_vad(bench_settings())
    sessions: list[Session] = []
    loop = asyncio.get_running_loop()
    _say({"ready": True})
    try:
        while True:
            line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
            if not line or line == "quit":
                break
            command, *args = line.split()
            if command == "add":
                session = Session(args[0], vad)
                sessions.append(session)
                await session.join(url, args[1])
                await asyncio.wait_for(session.subscribed.wait(), 60)
                _say({"added": args[0]})
            elif command == "measure":
                for s in sessions:
                    s.lateness.clear()
                    s.inference.clear()
                await asyncio.sleep(float(args[0]))
                _say(
                    {
                        "sessions": [
                            {"room": s.room_name, "lateness_s": s.lateness, "inference_s": s.inference}
                            for s in sessions
                        ]
                    }
                )
    finally:
        for s in sessions:
            await s.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
