"""A real livekit-agents ``AgentServer`` registering with the server and being dispatched.

The worker runs in this process (thread job executor); its job connects to the room with the
token the server assigned and greets the room with a data packet naming its dispatch metadata.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from livekit import api, rtc
from livekit.agents import AgentServer, JobContext, JobExecutorType

from tests.lkserver.fixtures import LiveKitServerProcess

from .helpers import Events, eventually

pytestmark = [pytest.mark.livekit, pytest.mark.usefixtures("livekit_network")]

AGENT_NAME = "test-helper"


async def greeter(ctx: JobContext) -> None:
    """The job: join, then say hello with the dispatch's metadata."""
    await ctx.connect()
    await ctx.room.local_participant.publish_data(f"hello: {ctx.job.metadata}".encode(), topic="greeting")


@pytest.fixture
async def agent_worker(livekit_server: LiveKitServerProcess) -> AsyncIterator[str]:
    """An AgentServer with an agent name, registered; yields its worker id."""
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD,
        ws_url=livekit_server.url,
        api_key=livekit_server.api_key,
        api_secret=livekit_server.api_secret,
        port=0,
    )
    server.rtc_session(greeter, agent_name=AGENT_NAME)
    registered: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server.on("worker_registered", lambda worker_id, info: registered.done() or registered.set_result(worker_id))
    running = asyncio.create_task(server.run(devmode=True))
    try:
        yield await asyncio.wait_for(registered, 30)
    finally:
        await server.aclose()
        await asyncio.wait_for(running, 30)


async def agent_joins(room: rtc.Room, greetings: Events) -> tuple[rtc.RemoteParticipant, str]:
    """Wait for the agent's greeting; return the agent participant and what it said."""
    (packet,) = await greetings.first(lambda p: p.topic == "greeting")
    return packet.participant, packet.data.decode()


async def test_create_dispatch_sends_the_named_agent(agent_worker, livekit_server, livekit_connect, livekit_room_name):
    assert agent_worker.startswith("AW_")
    user = await livekit_connect(livekit_server, "user", livekit_room_name)
    greetings = Events(user, "data_received")
    left = Events(user, "participant_disconnected")

    async with livekit_server.api() as lk:
        # the room's default dispatch is for unnamed agents: ours (named) was not sent
        default = await lk.agent_dispatch.list_dispatch(livekit_room_name)
        assert [(d.agent_name, len(d.state.jobs)) for d in default] == [("", 0)]

        dispatch = await lk.agent_dispatch.create_dispatch(
            api.CreateAgentDispatchRequest(agent_name=AGENT_NAME, room=livekit_room_name, metadata="by api")
        )
        agent, said = await agent_joins(user, greetings)
        assert said == "hello: by api"
        assert agent.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
        assert agent.attributes.get("lk.agent.name") == AGENT_NAME

        (listed,) = [d for d in await lk.agent_dispatch.list_dispatch(livekit_room_name) if d.id == dispatch.id]
        (job,) = listed.state.jobs
        assert job.state.participant_identity == agent.identity
        assert job.state.worker_id == agent_worker
        participants = await lk.room.list_participants(api.ListParticipantsRequest(room=livekit_room_name))
        assert {p.identity for p in participants.participants} == {"user", agent.identity}

        # deleting the dispatch terminates the job: the agent leaves
        await lk.agent_dispatch.delete_dispatch(dispatch.id, livekit_room_name)
        (gone,) = await left.next()
        assert gone.identity == agent.identity


async def test_room_configuration_in_the_token_dispatches_the_agent(
    agent_worker, livekit_server, livekit_connect, livekit_room_name
):
    config = api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=AGENT_NAME, metadata="by token")])
    user = await livekit_connect(livekit_server, "user", livekit_room_name, room_config=config)
    greetings = Events(user, "data_received")
    agent, said = await agent_joins(user, greetings)
    assert said == "hello: by token"
    assert agent.identity in user.remote_participants
    async with livekit_server.api() as lk:
        dispatches = await lk.agent_dispatch.list_dispatch(livekit_room_name)
    assert [(d.agent_name, d.metadata) for d in dispatches] == [(AGENT_NAME, "by token")]
    await eventually(lambda: len(user.remote_participants) == 1)
