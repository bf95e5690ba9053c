"""The longest message a call may carry, too big for one RPC payload, crosses the room intact (data stream, not
truncated) and is spoken by the worker's TTS."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

import pytest

from agent.config import Settings
from agent.protocol import MAX_INLINE_BYTES, MESSAGE_MAX_CHARS
from mcp_bridge.converse_types import ConverseRequest, Stage
from mcp_bridge.livekit import LiveKitTransport

from .fast_tts import FastTTSServer
from .harness import TestUser, WorkerProcess

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]

# Greek letters take two bytes each: the longest message (in characters) is then over the inline limit (in bytes)
WORDS = "άλφα βήτα γάμμα δέλτα έψιλον ζήτα ήτα θήτα ιώτα κάππα λάμδα μι νι ξι όμικρον πι ρο σίγμα ταυ ωμέγα".split()


def longest_message() -> str:
    rng = random.Random(50)
    sentences: list[str] = []
    while sum(len(s) + 1 for s in sentences) < MESSAGE_MAX_CHARS - 1200:
        sentences.append(" ".join(rng.choice(WORDS) for _ in range(150)).capitalize() + ".")
    return " ".join(sentences) + " The end."


def normalised(text: str) -> str:
    return " ".join(text.split())


async def test_the_longest_message_reaches_the_worker_intact(
    start_lk_worker: Callable[..., WorkerProcess],
    lk_settings: Callable[..., Settings],
    lk_user: TestUser,
) -> None:
    message = longest_message()
    assert len(message) <= MESSAGE_MAX_CHARS and len(message.encode()) > MAX_INLINE_BYTES
    stages: list[Stage] = []

    async def progress(stage: Stage, detail: str) -> None:
        stages.append(stage)

    async with FastTTSServer() as tts_server:
        agent_name = "voice-mcp-large-message"
        start_lk_worker(voice_mcp_agent_name=agent_name, voice_mcp_tts=tts_server.base_url)
        transport = LiveKitTransport(lk_settings(agent_name=agent_name), worker_start_timeout=120)
        try:
            result = await asyncio.wait_for(
                transport.converse(ConverseRequest(message=message, wait_for_response=False), progress), 400
            )
        finally:
            await transport.aclose()

    assert result.transport == "livekit" and result.ended_by == "not_waiting"
    assert result.tts_provider == tts_server.base_url
    assert Stage.SPEAKING in stages
    spoken = normalised(" ".join(tts_server.inputs))
    assert len(tts_server.inputs) > 1  # spoken sentence by sentence, as with any TTS
    assert spoken == normalised(message)
