"""What a LiveKit frontend receives for one user turn: the worker publishes the user's transcript once.

Frontends (the Agents Playground, components-js) build the conversation from `lk.transcription` text streams:
a segment (`lk.segment_id`) may be updated by interim streams and is closed by one final stream
(`lk.transcription_final=true`). One spoken turn must be one segment with one final text, however many calls
and queues it passes through.

Besides the streams, livekit-agents also sends the deprecated `rtc.Transcription` packet while any STANDARD
participant in the room has a client protocol below 3. The bridge is such a participant (the Python SDK announces
protocol 2), so in every voice-mcp room each transcript also travels that way; a frontend that renders both shows
it twice. livekit-agents offers no switch for it (see docs/livekit.md).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

import pytest

from agent.config import Settings
from agent.speech import PiperTTS
from mcp_bridge.converse_types import ConverseRequest, ListenOptions
from mcp_bridge.livekit import LiveKitTransport

from .conftest import synthesize, wait_until
from .harness import TestUser, WorkerProcess
from .test_livekit_converse import StageLog, words

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]

FINAL = "lk.transcription_final"
SEGMENT = "lk.segment_id"


def user_segments(user: TestUser) -> dict[str, list[tuple[bool, str]]]:
    """The user's own transcript as the room received it: segment id -> [(final, text), ...] in arrival order."""
    me = user.room.local_participant.identity
    segments: dict[str, list[tuple[bool, str]]] = defaultdict(list)
    for sender, attributes, text in list(user.transcripts):
        if sender == me:
            segments[attributes.get(SEGMENT, "")].append((attributes.get(FINAL) == "true", text))
    return segments


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
            lambda: sum(final for parts in user_segments(lk_user).values() for final, _ in parts) >= len(replies),
            30,
            "the final user transcripts",
        )
        await asyncio.sleep(2)  # a duplicate would follow the final one at once
    finally:
        await transport.aclose()

    segments = user_segments(lk_user)
    finals = [text for parts in segments.values() for final, text in parts if final]
    assert len(finals) == len(replies), f"one final transcript per turn, got {dict(segments)}"
    for parts in segments.values():
        assert sum(final for final, _ in parts) == 1, f"a segment is closed once: {parts}"
        assert parts[-1][0], f"nothing follows a segment's final text: {parts}"
