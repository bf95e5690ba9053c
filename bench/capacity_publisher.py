"""Users for the capacity benchmark: `python -m bench.capacity_publisher URL`, one process for all of them.

Reads lines `add ROOM TOKEN` on stdin; for each, joins ROOM as a participant and publishes a microphone track
that speaks the bundled Piper replies in a loop (half a second of silence between them) at real-time pace, in
10 ms frames at 48 kHz like a browser. `quit` (or end of input) leaves every room.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import numpy as np
from livekit import rtc

from agent.speech.audio import resample_int16

from .speech import REPLY_TEXTS, Speech

RATE = 48000


async def _speech_loop(speech: Speech) -> np.ndarray:
    parts: list[np.ndarray] = []
    silence = np.zeros(RATE // 2, dtype=np.int16)
    for texts in REPLY_TEXTS.values():
        for text in texts:
            reply = await speech.reply(text)
            parts += [resample_int16(reply.pcm, 16000, RATE), silence]
    return np.concatenate(parts)


async def _publish(url: str, token: str, audio: np.ndarray, offset: int) -> None:
    room = rtc.Room()
    await room.connect(url, token)
    source = rtc.AudioSource(RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
    await room.local_participant.publish_track(track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
    step = RATE // 100
    pos = offset - offset % step  # rooms do not all speak the same words at the same moment
    try:
        while True:
            if pos + step > audio.size:
                pos = 0
            chunk = audio[pos : pos + step]
            pos += step
            await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, step))
    finally:
        with contextlib.suppress(Exception):
            await room.disconnect()


async def main(url: str) -> None:
    speech = Speech()
    await speech.tts.load()
    audio = await _speech_loop(speech)
    tasks: list[asyncio.Task[None]] = []
    loop = asyncio.get_running_loop()
    print("ready", flush=True)
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line or line == "quit":
            break
        command, room, token = line.split()
        if command == "add":
            offset = (len(tasks) * 7919 * RATE // 10) % audio.size
            tasks.append(asyncio.create_task(_publish(url, token, audio, offset), name=f"publish-{room}"))
            print(f"added {room}", flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
