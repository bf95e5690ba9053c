"""Users for the real-worker capacity benchmark: `python -m bench.capacity_users URL`, one process for all.

Commands on stdin, one answer line on stdout:

- `idle ROOM TOKEN` → `added ROOM`: joins ROOM and publishes an open, silent microphone (10 ms frames at
  48 kHz, like a browser with nobody talking);
- `talk ROOM TOKEN` → `added ROOM`: the same, but the user speaks one of the bundled Piper replies, then stays
  silent for `PAUSE` seconds, in a loop. For every reply the end of speech (the moment its last voiced frame was
  captured) is recorded, and so is every final transcription of this user the worker publishes in the room
  (`lk.transcription`, `lk.transcription_final`, with text); end of speech → text is the arrival of the last final
  transcription between the reply's end and the next reply's start, minus that reply's end of speech (finals that
  arrive while a reply is spoken belong to that reply's earlier segments and are not counted for the one before);
- `measure SECONDS` → one JSON line: per talking room, the end of speech → text samples of the replies that
  ended within the window (and how many replies got no transcription within `PAUSE` seconds);
- `quit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np
from livekit import rtc

from agent.speech.audio import resample_int16
from tests.e2e_livekit.harness import tell_heard, worker_audio

from .speech import REPLY_TEXTS, Speech

RATE = 48000
STEP = RATE // 100
PAUSE = 4.0
LOUD = 300


@dataclass
class Reply:
    ended_at: float
    text_at: float | None = None


@dataclass
class User:
    room_name: str
    talking: bool
    room: rtc.Room = field(default_factory=rtc.Room)
    replies: list[Reply] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    track_sid: str | None = None
    speaking: bool = False
    """True from a reply's first frame until its last voiced sample has left the source."""

    def on_text(self, reader: rtc.TextStreamReader, sender: str) -> None:
        attributes = reader.info.attributes or {}
        mine = sender == self.room.local_participant.identity or (
            self.track_sid is not None and attributes.get("lk.transcribed_track_id") == self.track_sid
        )
        if not mine or attributes.get("lk.transcription_final") != "true":
            return
        arrived = time.perf_counter()
        # a final that arrives while the next reply is being spoken is that reply's first segment, not the end of
        # the previous one (a long reply has pauses, and each segment's transcript is final on its own)
        last = self.replies[-1] if self.replies else None
        reply = last if last is not None and not self.speaking and arrived >= last.ended_at else None

        async def drain() -> None:
            with contextlib.suppress(Exception):
                text = await reader.read_all()
                if reply is not None and text.strip():
                    reply.text_at = arrived

        task = asyncio.get_running_loop().create_task(drain())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def _prepare(speech: Speech) -> list[np.ndarray]:
    replies = []
    for texts in REPLY_TEXTS.values():
        for text in texts:
            reply = await speech.reply(text)
            replies.append(resample_int16(reply.pcm, 16000, RATE))
    return replies


def _voiced_end(samples: np.ndarray) -> int:
    """Index just past the last loud 10 ms frame."""
    loud = [i for i in range(0, samples.size - STEP + 1, STEP) if np.abs(samples[i : i + STEP]).max() > LOUD]
    return (loud[-1] + STEP) if loud else samples.size


async def _tell_when_heard(room: rtc.Room, track: rtc.Track, sid: str, worker: str) -> None:
    """As the web page does: tell the worker when its track's first audio arrives (it may then take the track
    away while quiet, as in real use), then stop decoding it (the users' own CPU is not what is measured)."""
    stream = rtc.AudioStream(track, sample_rate=RATE, num_channels=1)
    try:
        async for _ in stream:
            await tell_heard(room, worker, sid)
            break
    finally:
        await stream.aclose()


async def _run(user: User, url: str, token: str, replies: list[np.ndarray], offset: int) -> None:
    user.room.register_text_stream_handler("lk.transcription", user.on_text)

    def on_track(track: rtc.Track, publication: rtc.RemoteTrackPublication, participant: rtc.RemoteParticipant) -> None:
        if worker_audio(track, participant):
            task = asyncio.get_running_loop().create_task(
                _tell_when_heard(user.room, track, publication.sid, participant.identity)
            )
            user.tasks.add(task)
            task.add_done_callback(user.tasks.discard)

    user.room.on("track_subscribed", on_track)
    await user.room.connect(url, token)
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
    publication = await user.room.local_participant.publish_track(track, options)
    user.track_sid = publication.sid
    silence = np.zeros(STEP, dtype=np.int16)
    index = offset
    try:
        while True:
            if user.talking:
                reply = replies[index % len(replies)]
                index += 1
                end = _voiced_end(reply)
                user.speaking = True
                for i in range(0, reply.size - STEP + 1, STEP):
                    await source.capture_frame(rtc.AudioFrame(reply[i : i + STEP].tobytes(), RATE, 1, STEP))
                    if i < end <= i + STEP:
                        # the frame just captured is queued for ~capture latency; the last voiced sample
                        # leaves the source when the queue has played it
                        user.replies.append(Reply(ended_at=time.perf_counter() + source.queued_duration))
                        user.speaking = False
            for _ in range(int(PAUSE * 100) if user.talking else 100):
                await source.capture_frame(rtc.AudioFrame(silence.tobytes(), RATE, 1, STEP))
    finally:
        with contextlib.suppress(Exception):
            await user.room.disconnect()


def _measure(users: list[User], since: float, until: float) -> dict[str, object]:
    rooms = []
    for user in users:
        if not user.talking:
            continue
        done = [r for r in user.replies if since <= r.ended_at <= until]
        rooms.append(
            {
                "room": user.room_name,
                "eos_to_text_s": [r.text_at - r.ended_at for r in done if r.text_at is not None],
                "replies": len(done),
                "untranscribed": sum(1 for r in done if r.text_at is None),
            }
        )
    return {"rooms": rooms}


async def main(url: str) -> None:
    replies: list[np.ndarray] = []  # synthesised when the first talking user is added
    users: list[User] = []
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line or line == "quit":
            break
        command, *args = line.split()
        if command in ("idle", "talk"):
            if command == "talk" and not replies:
                speech = Speech()
                await speech.tts.load()
                replies += await _prepare(speech)
            user = User(args[0], talking=command == "talk")
            users.append(user)
            offset = len(users) * 3  # rooms do not all say the same reply at the same moment
            tasks.append(asyncio.create_task(_run(user, url, args[1], replies, offset), name=f"user-{args[0]}"))
            print(f"added {args[0]}", flush=True)
        elif command == "measure":
            since = time.perf_counter()
            await asyncio.sleep(float(args[0]))
            until = time.perf_counter()
            await asyncio.sleep(PAUSE)  # the last replies' transcriptions may still be on their way
            print(json.dumps(_measure(users, since, until)), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
