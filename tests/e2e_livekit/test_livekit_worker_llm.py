"""With an LLM configured, the worker answers the user in the room while no converse call waits — and the turn
still reaches the next converse call, so the assistant learns what was said."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import jiwer
import pytest

from agent.config import Settings
from agent.speech import PiperTTS
from mcp_bridge.converse_types import ConverseRequest, no_progress
from mcp_bridge.livekit import LiveKitTransport

from .conftest import synthesize, wait_until
from .fake_llm import FakeChatServer
from .harness import TestUser, WorkerProcess, agent_transcript_text

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]


def words(text: str) -> set[str]:
    return set(jiwer.RemovePunctuation()(text.lower()).split())


async def test_the_worker_llm_answers_unclaimed_turns_and_they_still_reach_the_next_converse(
    start_lk_worker: Callable[..., WorkerProcess],
    lk_settings: Callable[..., Settings],
    lk_user: TestUser,
    piper: PiperTTS,
) -> None:
    agent_name = "voice-mcp-with-llm"
    async with FakeChatServer() as llm_server:
        start_lk_worker(
            voice_mcp_agent_name=agent_name,
            voice_mcp_llm_model="fake-model",
            voice_mcp_llm_base_url=llm_server.base_url,
        )
        transport = LiveKitTransport(lk_settings(agent_name=agent_name), worker_start_timeout=120)
        try:
            worker = await transport.ensure_worker(120)
            for _ in range(300):
                if worker.info.user_identity == "alice":
                    break
                await asyncio.sleep(0.2)
                worker = await transport.ensure_worker(30)
            assert worker.info.llm == "fake-model"

            await lk_user.speak(await synthesize(piper, "Please tell the assistant that the printer is broken."))
            await wait_until(lambda: bool(llm_server.requests), 120, "the worker's LLM request")
            assert any("printer" in m.lower() for m in llm_server.user_messages()), llm_server.user_messages()
            # the LLM's answer is spoken into the room and shown as the agent's transcription
            await wait_until(lambda: "local assistant" in agent_transcript_text(lk_user).lower(), 60, "the answer")

            result = await asyncio.wait_for(
                transport.converse(ConverseRequest(message="I am back. Did anything happen?"), no_progress), 180
            )
        finally:
            await transport.aclose()
    assert result.transport == "livekit" and result.heard_speech
    assert {"printer", "broken"} <= words(result.text), result.text
