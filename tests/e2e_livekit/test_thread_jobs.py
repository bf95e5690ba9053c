"""`VOICE_MCP_JOB_EXECUTOR=thread`: the real worker serves its rooms as threads of one process.

Two rooms at once through the loopback server, each with its own user and bridge transport: both jobs run inside
the worker process (their log lines carry its pid), share the process's loaded models, and still keep each room's
conversation to itself: each user hears only their own room's message, and each call returns only what its own
user said.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import jiwer
import pytest
from livekit import api

from agent.config import Settings
from agent.speech import FasterWhisperSTT, PiperTTS
from mcp_bridge.converse_types import ConverseRequest, ConverseResult, ListenOptions, Stage
from mcp_bridge.livekit import LiveKitTransport

from .conftest import synthesize, wait_until
from .harness import ServerProcess, TestUser, WorkerProcess
from .test_livekit_converse import StageLog, transcribe

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]

AGENT_NAME = "voice-mcp-threads"  # its own worker: the module's shared one must not take these dispatches


def words(text: str) -> set[str]:
    return set(jiwer.RemovePunctuation()(text.lower()).split())


async def converse_in_room(
    transport: LiveKitTransport, user: TestUser, whisper: FasterWhisperSTT, piper: PiperTTS, message: str, reply: str
) -> tuple[str, ConverseResult, list[Stage]]:
    """One whole exchange: the user hears `message` (returned as Whisper heard it) and answers `reply` aloud."""
    stages = StageLog()
    call = asyncio.create_task(
        transport.converse(ConverseRequest(message=message, listen=ListenOptions(max_seconds=90)), stages)
    )
    try:
        await asyncio.wait_for(stages.listening.wait(), 240)
        heard = await transcribe(whisper, user.heard.voiced())
        await user.speak(await synthesize(piper, reply))
        return heard, await asyncio.wait_for(call, 180), stages.stages
    finally:
        call.cancel()


async def test_thread_jobs_serve_two_rooms_at_once_each_with_its_own_conversation(
    lk_server: ServerProcess,
    start_lk_worker: Callable[..., WorkerProcess],
    lk_settings: Callable[..., Settings],
    lk_room: str,
    lk_user: TestUser,
    whisper: FasterWhisperSTT,
    piper: PiperTTS,
) -> None:
    worker = start_lk_worker(voice_mcp_agent_name=AGENT_NAME, voice_mcp_job_executor="thread")
    other_room = f"e2e-threads-{uuid.uuid4().hex[:6]}"
    bob = await TestUser.join(lk_server, other_room, identity="bob")
    alice_transport = LiveKitTransport(lk_settings(agent_name=AGENT_NAME), worker_start_timeout=240)
    bob_transport = LiveKitTransport(lk_settings(agent_name=AGENT_NAME, room=other_room), worker_start_timeout=240)
    try:
        (alice_heard, alice_result, alice_stages), (bob_heard, bob_result, bob_stages) = await asyncio.gather(
            converse_in_room(
                alice_transport, lk_user, whisper, piper,
                "The build is green. Shall I deploy the release to staging now?",
                "Yes please, deploy it to staging.",
            ),
            converse_in_room(
                bob_transport, bob, whisper, piper,
                "Your coffee order is ready. Do you want sugar with it?",
                "No sugar, just milk please.",
            ),
        )
        await wait_until(
            lambda: worker.job_pid(lk_room) is not None and worker.job_pid(other_room) is not None,
            30,
            "both jobs' ready lines in the worker's log",
        )
        jobs = {worker.job_pid(lk_room), worker.job_pid(other_room)}
    finally:
        await asyncio.gather(alice_transport.aclose(), bob_transport.aclose(), bob.leave())
        async with api.LiveKitAPI(lk_server.url, lk_server.api_key, lk_server.api_secret) as lkapi:
            try:
                await lkapi.room.delete_room(api.DeleteRoomRequest(room=other_room))
            except Exception:  # already gone
                pass

    assert jobs == {worker.proc.pid}, "both rooms' jobs run as threads of the worker process"
    assert {"deploy", "release", "staging"} <= words(alice_heard), alice_heard
    assert {"coffee", "sugar"} <= words(bob_heard), bob_heard
    assert not {"coffee", "sugar"} & words(alice_heard) and not {"deploy", "staging"} & words(bob_heard)
    for result, stages in ((alice_result, alice_stages), (bob_result, bob_stages)):
        assert result.transport == "livekit" and result.heard_speech
        assert result.tts_provider == "piper" and result.stt_provider == "faster-whisper"
        assert Stage.SPEAKING in stages and stages[-1] == Stage.DONE
    # each reply by a word Whisper tiny.en never missed in it ("milk" once came back as "no" in CI)
    assert {"deploy", "staging"} <= words(alice_result.text), alice_result.text
    assert "sugar" in words(bob_result.text), bob_result.text
    assert not {"sugar", "milk"} & words(alice_result.text) and not {"deploy", "staging"} & words(bob_result.text)
