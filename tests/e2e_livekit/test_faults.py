"""Fault injection on the LiveKit path, against the loopback server in the private network namespace.

For each fault: the call in progress ends with a clear typed error (or completes), the next call works, and the
user's utterances are counted: every utterance the user completed while a worker served the room is returned by
some call. Utterances are typed chat (`lk.chat`, which the worker treats like speech) so that they can be counted
exactly; the kill "while the user is speaking" uses real speech.

- the worker SIGKILLed mid-listen while the user is speaking;
- one job SIGKILLed while it holds a turn the user completed between calls (a job replaced under load): the bridge's
  copy (`mcp_bridge.livekit.turn_ledger`) is returned by the next job's first answer;
- the server restarted mid-call (same address, empty server);
- the namespace's network link cut for 3 s mid-call (`ip link set lkns0 down`; signalling stays on loopback);
- the bridge's token expiring during a long session (a 15 s token lifetime), then a forced re-join.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from livekit import api

from agent.config import Settings
from agent.speech import PiperTTS
from mcp_bridge.converse_types import (
    ConverseRequest,
    ConverseResult,
    ConverseTimeout,
    ListenOptions,
    TransportUnavailable,
    VoiceError,
    no_progress,
)
from mcp_bridge.livekit import LiveKitTransport

from .conftest import synthesize, wait_until
from .harness import NETNS_INTERFACE, ServerProcess, TestUser, WorkerProcess, start_server, start_worker
from .test_livekit_converse import StageLog

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(900)]

LISTEN = ListenOptions(max_seconds=120, min_seconds=0)


class Conversation:
    """The bridge and a user in one room; counts what the user typed and what the calls returned."""

    def __init__(self, transport: LiveKitTransport, user: TestUser) -> None:
        self.transport = transport
        self.user = user
        self.typed: list[str] = []
        self.returned: list[str] = []

    async def type(self, text: str) -> None:
        self.typed.append(text)
        await self.user.room.local_participant.send_text(text, topic="lk.chat")

    def keep(self, result: ConverseResult) -> ConverseResult:
        self.returned.extend(line for line in result.text.splitlines() if line.strip())
        return result

    async def exchange(self, message: str, reply: str, within: float = 180) -> ConverseResult:
        """One converse call answered by a typed reply as soon as the worker listens."""
        stages = StageLog()
        call = asyncio.create_task(self.transport.converse(ConverseRequest(message=message, listen=LISTEN), stages))
        listening = asyncio.create_task(stages.listening.wait())
        try:
            await asyncio.wait({call, listening}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
        if call.done():  # ended before listening: its typed error (or a result) says why
            return self.keep(call.result())
        if not stages.listening.is_set():
            call.cancel()
            raise TimeoutError(f"the call did not start listening within {within:.0f} s")
        await self.type(reply)
        return self.keep(await asyncio.wait_for(call, within))

    async def sweep(self) -> None:
        """A call that only collects what is still queued."""
        request = ConverseRequest(message="Anything else?", wait_for_response=False)
        self.keep(await asyncio.wait_for(self.transport.converse(request, no_progress), 180))

    def lost(self) -> list[str]:
        return [text for text in self.typed if not any(text in line for line in self.returned)]

    def duplicated(self) -> list[str]:
        return [text for text in self.typed if sum(text in line for line in self.returned) > 1]


async def until_linked(transport: LiveKitTransport, user: str = "alice", within: float = 240) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            worker = await transport.ensure_worker(30)
        except VoiceError:
            await asyncio.sleep(1)
            continue
        if worker.info.user_identity == user:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"no worker listened to {user} within {within:.0f} s")


async def retry_exchange(conversation: Conversation, message: str, reply: str, attempts: int = 10) -> ConverseResult:
    """After a fault the link and the worker come back on their own; the first calls may still fail (typed)."""
    failures: list[str] = []
    for _ in range(attempts):
        try:
            await until_linked(conversation.transport)
            return await conversation.exchange(message, reply)
        except (VoiceError, TimeoutError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            if conversation.typed and conversation.typed[-1] == reply:
                conversation.typed.pop()  # never typed into a listening call: the same words are typed again
            await asyncio.sleep(3)
    raise AssertionError(f"no call worked after the fault: {failures}")


def unique(word: str) -> str:
    return f"{word} {uuid.uuid4().hex[:6]}"


async def test_worker_killed_mid_listen_while_the_user_speaks(
    start_lk_worker: Callable[..., WorkerProcess], lk_settings: Callable[..., Settings], lk_user: TestUser,
    piper: PiperTTS,
) -> None:
    agent_name = "voice-mcp-fault-kill"
    worker = start_lk_worker(voice_mcp_agent_name=agent_name)
    transport = LiveKitTransport(lk_settings(agent_name=agent_name, livekit_timeout=5.0), worker_start_timeout=120)
    talk = Conversation(transport, lk_user)
    try:
        await until_linked(transport)
        await talk.exchange("First question?", unique("first answer"))
        queued = unique("said between calls")
        await talk.type(queued)  # no call waits: queued in the worker, returned by the next call

        # the queued turn is returned by this call (at once, or as its reply if it arrives while it listens)
        talk.keep(await asyncio.wait_for(transport.converse(ConverseRequest(message="Second?", listen=LISTEN),
                                                            no_progress), 180))

        stages = StageLog()
        doomed = asyncio.create_task(transport.converse(ConverseRequest(message="Third?", listen=LISTEN), stages))
        await asyncio.wait_for(stages.listening.wait(), 180)
        speech = asyncio.create_task(lk_user.speak(await synthesize(piper, "I was saying that the deployment of the "
                                                                     "release should wait until tomorrow morning.")))
        await asyncio.sleep(1.0)  # mid-sentence
        worker.kill()
        with pytest.raises((ConverseTimeout, TransportUnavailable)) as caught:
            await asyncio.wait_for(doomed, 90)
        assert caught.value.hint, "the error says what to do"
        speech.cancel()

        start_lk_worker(voice_mcp_agent_name=agent_name)
        await retry_exchange(talk, "Are you still there?", unique("yes after the crash"))
        await talk.sweep()
    finally:
        await transport.aclose()
    assert talk.lost() == [] and talk.duplicated() == [], (talk.typed, talk.returned)
    assert len(talk.typed) == 3


async def test_a_job_killed_while_it_holds_a_queued_turn(
    start_lk_worker: Callable[..., WorkerProcess], lk_settings: Callable[..., Settings], lk_user: TestUser,
    lk_room: str,
) -> None:
    agent_name = "voice-mcp-fault-job"
    worker = start_lk_worker(voice_mcp_agent_name=agent_name, voice_mcp_job_executor="process")  # kills a job process
    transport = LiveKitTransport(lk_settings(agent_name=agent_name, livekit_timeout=8.0), worker_start_timeout=120)
    talk = Conversation(transport, lk_user)
    try:
        await retry_exchange(talk, "First question?", unique("first answer"))  # a cold job may fail its first
        assert transport._worker is not None
        old_job = transport._worker.identity
        job = worker.job_pid(lk_room)
        assert job is not None and job != worker.proc.pid, "the room's job runs in its own process"

        held = unique("said between calls")
        await talk.type(held)  # no call waits: the job queues it and tells the bridge
        await wait_until(lambda: transport.ledger.holds(held), 60, "the job's notice of the queued turn")
        os.kill(job, signal.SIGKILL)  # the job dies with the turn in its queue; the worker itself lives on

        after = await retry_exchange(talk, "Are you still there?", unique("yes, a new job"))
        await talk.sweep()
    finally:
        await transport.aclose()
    assert transport._worker is None or transport._worker.identity != old_job, "a new job answered"
    assert held in after.earlier, (after, talk.returned)  # the first answer after the kill returns it
    assert transport.ledger.recovered_total >= 1
    assert talk.lost() == [] and talk.duplicated() == [], (talk.typed, talk.returned)
    assert len(talk.typed) == 3


async def test_a_stalled_job_is_waited_for_not_replaced(
    start_lk_worker: Callable[..., WorkerProcess], lk_settings: Callable[..., Settings], lk_user: TestUser,
    lk_room: str,
) -> None:
    """A job whose process does not run for a while (SIGSTOP: what an overloaded machine does to it for seconds)
    is not replaced while it is still in the room: a second job would only add load and split the user's turns."""
    agent_name = "voice-mcp-fault-stall"
    worker = start_lk_worker(voice_mcp_agent_name=agent_name, voice_mcp_job_executor="process")  # stops a job process
    transport = LiveKitTransport(lk_settings(agent_name=agent_name, livekit_timeout=8.0), worker_start_timeout=120)
    talk = Conversation(transport, lk_user)
    try:
        await retry_exchange(talk, "First question?", unique("first answer"))
        assert transport._worker is not None
        serving = transport._worker.identity
        job = worker.job_pid(lk_room)
        assert job is not None
        held = unique("said before the stall")
        await talk.type(held)
        await wait_until(lambda: transport.ledger.holds(held), 60, "the job's notice of the queued turn")

        transport.dispatcher.forget()  # the last dispatch is long past: only the stall rule holds another back
        dispatches = transport.dispatcher.dispatches
        os.kill(job, signal.SIGSTOP)
        try:
            with pytest.raises(TransportUnavailable):
                await transport.ensure_worker(6.0)
            assert transport.dispatcher.dispatches == dispatches, "no second job while the first is in the room"
        finally:
            os.kill(job, signal.SIGCONT)

        after = await retry_exchange(talk, "Are you back?", unique("back again"))
        await talk.sweep()
    finally:
        await transport.aclose()
    assert transport._worker is not None and transport._worker.identity == serving, "the same job serves on"
    assert held in after.earlier, (after, talk.returned)
    assert talk.lost() == [] and talk.duplicated() == [], (talk.typed, talk.returned)


async def test_server_restarted_mid_call(_require_netns: None, lk_settings: Callable[..., Settings],
                                         tmp_path: Path) -> None:
    server = start_server(tmp_path)
    port = server.port
    agent_name = "voice-mcp-fault-restart"
    room = f"fault-restart-{uuid.uuid4().hex[:6]}"
    worker = start_worker(server, tmp_path, {"VOICE_MCP_AGENT_NAME": agent_name})
    transport = LiveKitTransport(
        lk_settings(livekit_url=server.url, room=room, agent_name=agent_name, livekit_timeout=5.0),
        worker_start_timeout=120,
    )
    user = await TestUser.join(server, room)
    talk = Conversation(transport, user)
    servers: list[ServerProcess] = [server]
    try:
        await until_linked(transport)
        await talk.exchange("Before the restart?", unique("before restart"))

        stages = StageLog()
        doomed = asyncio.create_task(transport.converse(ConverseRequest(message="During?", listen=LISTEN), stages))
        await asyncio.wait_for(stages.listening.wait(), 180)
        server.stop()
        with pytest.raises((ConverseTimeout, TransportUnavailable)) as caught:
            await asyncio.wait_for(doomed, 90)
        assert caught.value.hint

        server = start_server(tmp_path, port=port)  # same address, empty server: the room is gone
        servers.append(server)
        await user.leave()
        user = talk.user = await TestUser.join(server, room)
        await retry_exchange(talk, "After the restart?", unique("after restart"))
        await talk.sweep()
    finally:
        await transport.aclose()
        await user.leave()
        worker.stop()
        for s in servers:
            s.stop()
    assert transport.link.connects >= 2, "the bridge joined the new server's room"
    assert talk.lost() == [] and talk.duplicated() == [], (talk.typed, talk.returned)
    assert len(talk.typed) == 2


def set_link(up: bool) -> None:
    subprocess.run(["ip", "link", "set", NETNS_INTERFACE, "up" if up else "down"], check=True, timeout=10)


async def test_network_cut_for_three_seconds_mid_call(
    start_lk_worker: Callable[..., WorkerProcess], lk_settings: Callable[..., Settings], lk_user: TestUser
) -> None:
    agent_name = "voice-mcp-fault-netcut"
    start_lk_worker(voice_mcp_agent_name=agent_name)
    transport = LiveKitTransport(lk_settings(agent_name=agent_name, livekit_timeout=8.0), worker_start_timeout=120)
    talk = Conversation(transport, lk_user)
    outcome: ConverseResult | VoiceError | None = None
    try:
        await until_linked(transport)
        stages = StageLog()
        call = asyncio.create_task(transport.converse(ConverseRequest(message="Still with me?", listen=LISTEN),
                                                      stages))
        await asyncio.wait_for(stages.listening.wait(), 180)
        set_link(False)
        try:
            await asyncio.sleep(3)
        finally:
            set_link(True)
        typed_during = unique("typed after the cut")
        await talk.type(typed_during)
        try:
            outcome = talk.keep(await asyncio.wait_for(call, 120))
        except (ConverseTimeout, TransportUnavailable) as exc:  # allowed: a clear typed error
            outcome = exc
            assert exc.hint
        await retry_exchange(talk, "And now?", unique("after the cut"))
        await talk.sweep()
    finally:
        set_link(True)
        await transport.aclose()
    assert outcome is not None
    assert talk.lost() == [] and talk.duplicated() == [], (outcome, talk.typed, talk.returned)


async def test_token_expiry_during_a_long_session(
    start_lk_worker: Callable[..., WorkerProcess], lk_settings: Callable[..., Settings], lk_user: TestUser,
    lk_server: ServerProcess,
) -> None:
    agent_name = "voice-mcp-fault-token"
    start_lk_worker(voice_mcp_agent_name=agent_name)
    settings = lk_settings(agent_name=agent_name, livekit_timeout=8.0)
    transport = LiveKitTransport(settings, worker_start_timeout=120, token_ttl=datetime.timedelta(seconds=15))
    talk = Conversation(transport, lk_user)
    try:
        await until_linked(transport)
        first_token = transport.tokens.current()
        await talk.exchange("Early?", unique("early"))
        await asyncio.sleep(max(0.0, first_token.expires_at + 2 - time.time()))  # the session outlives its token
        await talk.exchange("Late?", unique("late"))  # the joined connection is not re-checked

        # a re-join now needs a fresh token: make the server drop the bridge, as a lost connection would
        async with api.LiveKitAPI(lk_server.url, lk_server.api_key, lk_server.api_secret) as lkapi:
            await lkapi.room.remove_participant(
                api.RoomParticipantIdentity(room=settings.room, identity=settings.bridge_identity)
            )
        for _ in range(100):
            if not transport.link.connected:
                break
            await asyncio.sleep(0.1)
        await retry_exchange(talk, "After the re-join?", unique("rejoined"))
        await talk.sweep()
    finally:
        await transport.aclose()
    assert transport.link.connects >= 2 and transport.tokens.minted >= 2
    assert talk.lost() == [] and talk.duplicated() == [], (talk.typed, talk.returned)
