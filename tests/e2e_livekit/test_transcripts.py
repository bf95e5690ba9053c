"""What a LiveKit frontend receives for one user turn: the worker publishes the user's transcript once.

Frontends (the Agents Playground, components-js, our page) build the conversation from `lk.transcription` text
streams: a segment (`lk.segment_id`) may be updated by interim streams (`lk.transcription_final=false`) and is
closed by one final stream (`lk.transcription_final=true`). The worker sends a user's transcript on the user's
behalf: the stream names the user as its sender (livekit-server lets agents do that) and the user's microphone as
the transcribed track. One spoken turn must be one segment with one final text, however many calls and queues it
passes through.

livekit-agents also sends the deprecated `rtc.Transcription` packet while any standard participant announces a
client protocol below 3 (the Python SDK and livekit-client 2.x announce 2). That is a second, separate channel for
old frontends, which read it instead of the streams; it too must carry each turn as one closed segment.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

import pytest

from agent.config import Settings
from agent.protocol import WORKER_IDENTITY_PREFIX
from agent.speech import PiperTTS
from mcp_bridge.converse_types import ConverseRequest, ListenOptions
from mcp_bridge.livekit import LiveKitTransport

from .conftest import synthesize, wait_until
from .harness import TestUser, WorkerProcess
from .test_livekit_converse import StageLog, words

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]

FINAL = "lk.transcription_final"
SEGMENT = "lk.segment_id"
TRACK = "lk.transcribed_track_id"


def user_segments(user: TestUser) -> dict[str, list[tuple[bool, str]]]:
    """The user's own transcript as the room's streams carried it: segment id -> [(final, text), ...] in order."""
    me = user.room.local_participant.identity
    segments: dict[str, list[tuple[bool, str]]] = defaultdict(list)
    for sender, attributes, text in list(user.transcripts):
        if sender == me:
            segments[attributes.get(SEGMENT, "")].append((attributes.get(FINAL) == "true", text))
    return segments


def legacy_user_segments(user: TestUser) -> dict[str, list[tuple[bool, str]]]:
    """The same from the deprecated packets."""
    me = user.room.local_participant.identity
    segments: dict[str, list[tuple[bool, str]]] = defaultdict(list)
    for identity, segment_id, final, text in list(user.legacy_transcripts):
        if identity == me:
            segments[segment_id].append((final, text))
    return segments


def finals(segments: dict[str, list[tuple[bool, str]]]) -> list[str]:
    return [text for parts in segments.values() for final, text in parts if final]


def assert_closed_once(segments: dict[str, list[tuple[bool, str]]], turns: int, channel: str) -> None:
    assert len(finals(segments)) == turns, f"{channel}: one final transcript per turn, got {dict(segments)}"
    for parts in segments.values():
        assert sum(final for final, _ in parts) == 1, f"{channel}: a segment is closed once: {parts}"
        assert parts[-1][0], f"{channel}: nothing follows a segment's final text: {parts}"


async def test_each_user_turn_reaches_the_room_as_one_final_transcript(
    lk_worker: WorkerProcess, lk_settings: Callable[..., Settings], lk_user: TestUser, piper: PiperTTS
) -> None:
    transport = LiveKitTransport(lk_settings(), worker_start_timeout=120)
    replies = ["Please run the unit tests.", "Then open the pull request."]
    try:
        for reply in replies:
            stages = StageLog()
            call = asyncio.create_task(
                transport.converse(ConverseRequest(message="Next?", listen=ListenOptions(max_seconds=90)), stages)
            )
            await asyncio.wait_for(stages.listening.wait(), 180)
            await lk_user.speak(await synthesize(piper, reply))
            result = await asyncio.wait_for(call, 120)
            assert words(reply) & words(result.text), result.text
        await wait_until(
            lambda: len(finals(user_segments(lk_user))) >= len(replies)
            and len(finals(legacy_user_segments(lk_user))) >= len(replies),
            30,
            "the final user transcripts on both channels",
            received=lambda: (lk_user.transcripts, lk_user.legacy_transcripts),
        )
        # An ordering barrier instead of a wait for nothing: the worker's transcript of its next message travels the
        # same ordered data channel, so once it is here, any copy of the users' finals sent before it is here too.
        await transport.converse(ConverseRequest(message="Thanks, that is all.", wait_for_response=False), StageLog())
        await wait_until(
            lambda: any(
                sender.startswith(WORKER_IDENTITY_PREFIX) and "thanks" in text.lower()
                for sender, _, text in lk_user.transcripts
            ),
            60,
            "the worker's transcript of its next message",
            received=lambda: lk_user.transcripts,
        )
    finally:
        await transport.aclose()

    streams = user_segments(lk_user)
    assert_closed_once(streams, len(replies), "lk.transcription streams")
    assert_closed_once(legacy_user_segments(lk_user), len(replies), "rtc.Transcription packets")
    for reply, text in zip(replies, finals(streams), strict=True):
        assert words(reply) & words(text), (reply, text)
    tracks = {a.get(TRACK) for sender, a, _ in lk_user.transcripts if sender == lk_user.room.local_participant.identity}
    assert tracks == {lk_user.microphone_sid}, "a user transcript names the microphone it transcribes"
