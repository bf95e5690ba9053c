"""One user on two devices in the persistent room, against the real worker: a device that joins mid-conversation
gets the recent transcript, and the next converse takes its reply from whichever device answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import jiwer
import pytest
from livekit import rtc

from agent.config import Settings
from agent.history import TOPIC_HISTORY
from agent.speech import PiperTTS
from mcp_bridge.converse_types import ConverseRequest, ListenOptions, Stage
from mcp_bridge.livekit import LiveKitTransport

from .conftest import synthesize, wait_until
from .harness import ServerProcess, TestUser, WorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(900)]


def words(text: str) -> set[str]:
    return set(jiwer.RemovePunctuation()(text.lower()).split())


class Device(TestUser):
    """A TestUser that also keeps every history snapshot the worker sends it."""

    __test__ = False

    def __init__(self, room: rtc.Room) -> None:
        super().__init__(room)
        self.histories: list[list[dict[str, Any]]] = []

    @classmethod
    async def join_as(cls, server: ServerProcess, room_name: str, identity: str) -> Device:
        room = rtc.Room()
        device = cls(room)
        room.on("track_subscribed", device._on_track)
        room.register_text_stream_handler("lk.transcription", device._on_transcription)
        room.register_text_stream_handler(TOPIC_HISTORY, device._on_history)
        await room.connect(server.url, server.token(identity, room_name), options=rtc.RoomOptions(auto_subscribe=True))
        track = rtc.LocalAudioTrack.create_audio_track("microphone", device._source)
        await room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )
        return device

    def _on_history(self, reader: rtc.TextStreamReader, participant_identity: str) -> None:
        async def read() -> None:
            self.histories.append(json.loads(await reader.read_all()))

        self._spawn(read())


class Listening:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def __call__(self, stage: Stage, message: str) -> None:
        if stage == Stage.LISTENING:
            self.event.set()


async def converse(transport: LiveKitTransport, message: str, answer: Callable[[], Any]) -> tuple[str, list[str]]:
    listening = Listening()
    call = asyncio.create_task(
        transport.converse(ConverseRequest(message=message, listen=ListenOptions(max_seconds=120)), listening)
    )
    listening_task = asyncio.create_task(listening.event.wait())
    await asyncio.wait({call, listening_task}, timeout=300, return_when=asyncio.FIRST_COMPLETED)
    listening_task.cancel()
    if call.done():  # it ended without listening: fail with its own error or result
        raise AssertionError(f"converse ended before listening: {call.result()!r}")
    assert listening.event.is_set(), "the worker did not start listening within 300 s"
    await answer()
    result = await asyncio.wait_for(call, 300)
    assert result.transport == "livekit" and result.heard_speech
    return result.text, result.earlier


async def test_a_second_device_gets_the_history_and_answers_the_next_converse(
    lk_server: ServerProcess,
    lk_worker: WorkerProcess,
    lk_settings: Callable[..., Settings],
    lk_room: str,
    piper: PiperTTS,
) -> None:
    phone = await Device.join_as(lk_server, lk_room, "alice-phone")
    desktop: Device | None = None
    transport = LiveKitTransport(lk_settings(livekit_timeout=30.0), worker_start_timeout=300)
    try:
        worker = await transport.ensure_worker(300)
        for _ in range(300):
            if worker.info.user_identity == "alice-phone":
                break
            await asyncio.sleep(0.2)
            worker = await transport.ensure_worker(30)
        assert worker.info.user_identity == "alice-phone"

        reply_audio = await synthesize(piper, "Yes, deploy the release to staging.")
        text, _ = await converse(
            transport, "The build is green. Shall I deploy the release to staging?", lambda: phone.speak(reply_audio)
        )
        assert {"deploy", "staging"} <= words(text), text

        # the desktop joins mid-conversation and is sent what was said so far
        desktop = await Device.join_as(lk_server, lk_room, "alice-desktop")
        await wait_until(lambda: bool(desktop and desktop.histories), 60, "the history on the new device")
        history = desktop.histories[-1]
        roles = [turn["role"] for turn in history]
        assert roles[-2:] == ["assistant", "user"], history
        assistant, user = history[-2], history[-1]
        assert {"build", "green", "staging"} <= words(assistant["text"]), assistant
        assert assistant["identity"] == worker.identity
        assert {"deploy", "staging"} <= words(user["text"]) and user["identity"] == "alice-phone", user
        assert all(isinstance(turn["at"], float) for turn in history)

        # the next question is answered from the desktop: that reply is the result
        answer = await synthesize(piper, "Run the integration tests on the desktop first.")
        text, earlier = await converse(transport, "Which tests should I run first?", lambda: desktop.speak(answer))
        assert {"integration", "desktop"} <= words(text) and words(text) & {"test", "tests"}, text
        assert earlier == []

        worker = await transport.ensure_worker(30)
        assert worker.info.user_identity == "alice-desktop", "the worker now listens to the device that spoke"
        assert not worker.info.busy and worker.info.queued == 0

        # the phone leaves; the desktop's page reconnects (same identity), gets both devices' turns, is heard again
        await phone.leave()
        await desktop.leave()
        desktop = await Device.join_as(lk_server, lk_room, "alice-desktop")
        await wait_until(lambda: bool(desktop and desktop.histories), 60, "the history after reconnecting")
        speakers = [turn["identity"] for turn in desktop.histories[-1] if turn["role"] == "user"]
        assert speakers[-2:] == ["alice-phone", "alice-desktop"], desktop.histories[-1]
        again = await synthesize(piper, "Then deploy to production tomorrow morning.")
        text, _ = await converse(transport, "Anything else?", lambda: desktop.speak(again))
        assert {"production", "tomorrow"} <= words(text), text
    finally:
        await transport.aclose()
        await phone.leave()
        if desktop is not None:
            await desktop.leave()
