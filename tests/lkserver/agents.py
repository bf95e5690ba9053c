"""The agent worker protocol (``/agent``) and agent dispatch.

A livekit-agents worker connects with a token that has the ``agent`` grant and registers
(``agent_name`` set means explicit dispatch only). For every agent dispatch of a room (from the
room's configuration when it is created, or ``AgentDispatchService.CreateDispatch``) the server
offers a job to a registered worker with that agent name (``availability``); a worker that
accepts gets an ``assignment`` with a token for the job's participant, signed with the key the
worker connected with. ``termination`` ends a job when its dispatch is deleted or its room closes.
Only room jobs (``JT_ROOM``) are dispatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web
from livekit import api
from livekit.protocol import agent, agent_dispatch, models

from .auth import AuthError, KeyStore, require_agent
from .rooms import Room, RoomManager, new_sid
from .signalling import SERVER_INFO

log = logging.getLogger("lkserver.agents")

AVAILABILITY_TIMEOUT = 10.0
AGENT_NAME_ATTRIBUTE = "lk.agent.name"


@dataclass
class Worker:
    id: str
    ws: web.WebSocketResponse
    api_key: str
    agent_name: str
    job_type: agent.JobType.ValueType
    permissions: models.ParticipantPermission
    status: agent.WorkerStatus.ValueType = agent.WorkerStatus.WS_AVAILABLE
    load: float = 0.0
    jobs: dict[str, agent.Job] = field(default_factory=dict)
    answers: dict[str, asyncio.Future[agent.AvailabilityResponse]] = field(default_factory=dict)
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def send(self, msg: agent.ServerMessage) -> None:
        async with self.send_lock:
            await self.ws.send_bytes(msg.SerializeToString())

    async def offer(self, job: agent.Job) -> agent.AvailabilityResponse | None:
        """Ask whether the worker takes ``job``; None when it does not answer in time."""
        waiter = asyncio.get_running_loop().create_future()
        self.answers[job.id] = waiter
        try:
            await self.send(agent.ServerMessage(availability=agent.AvailabilityRequest(job=job)))
            return await asyncio.wait_for(waiter, AVAILABILITY_TIMEOUT)
        except (TimeoutError, ConnectionError):
            return None
        finally:
            self.answers.pop(job.id, None)


class AgentService:
    """Registered workers, and the dispatch of rooms' agent jobs to them."""

    def __init__(self, keys: KeyStore, rooms: RoomManager) -> None:
        self.keys = keys
        self.rooms = rooms
        self.workers: dict[str, Worker] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        rooms.on_room_created.append(self._on_room_created)
        rooms.on_room_closed.append(self._on_room_closed)

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/agent", self.serve)]

    # -- dispatch ---------------------------------------------------------------------------

    async def _on_room_created(self, room: Room) -> None:
        for dispatch in room.dispatches.values():
            self.launch(room, dispatch)

    async def _on_room_closed(self, room: Room) -> None:
        for dispatch in room.dispatches.values():
            await self.terminate(dispatch)

    def launch(self, room: Room, dispatch: agent_dispatch.AgentDispatch) -> None:
        """Dispatch ``dispatch``'s job in the background (the caller does not wait for a worker)."""
        task = asyncio.create_task(self._dispatch(room, dispatch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, room: Room, dispatch: agent_dispatch.AgentDispatch) -> None:
        now = time.time_ns()
        job = agent.Job(
            id=new_sid("AJ_"),
            dispatch_id=dispatch.id,
            type=agent.JobType.JT_ROOM,
            room=room.to_proto(),
            agent_name=dispatch.agent_name,
            metadata=dispatch.metadata,
            attributes=dict(dispatch.attributes),
            state=agent.JobState(status=agent.JobStatus.JS_PENDING, updated_at=now),
        )
        candidates = sorted(
            (
                w
                for w in self.workers.values()
                if w.agent_name == dispatch.agent_name
                and w.job_type == agent.JobType.JT_ROOM
                and w.status == agent.WorkerStatus.WS_AVAILABLE
            ),
            key=lambda w: w.load,
        )
        for worker in candidates:
            answer = await worker.offer(job)
            if answer is None or not answer.available:
                continue
            job.state.status = agent.JobStatus.JS_RUNNING
            job.state.started_at = time.time_ns()
            job.state.participant_identity = answer.participant_identity
            job.state.worker_id = worker.id
            worker.jobs[job.id] = job
            dispatch.state.jobs.append(job)
            token = self._job_token(worker, room.name, answer)
            await worker.send(agent.ServerMessage(assignment=agent.JobAssignment(job=job, token=token)))
            log.info("job %s (%r) in %s assigned to %s", job.id, dispatch.agent_name, room.name, worker.id)
            return
        log.warning("no worker took agent %r for room %s", dispatch.agent_name, room.name)

    def _job_token(self, worker: Worker, room: str, answer: agent.AvailabilityResponse) -> str:
        perm = worker.permissions
        attributes = dict(answer.participant_attributes)
        attributes[AGENT_NAME_ATTRIBUTE] = worker.agent_name
        token = (
            api.AccessToken(worker.api_key, self.keys.secret(worker.api_key))
            .with_identity(answer.participant_identity)
            .with_name(answer.participant_name)
            .with_metadata(answer.participant_metadata)
            .with_attributes(attributes)
            .with_kind("agent")
            .with_grants(
                api.VideoGrants(
                    room_join=True,
                    room=room,
                    can_publish=perm.can_publish,
                    can_subscribe=perm.can_subscribe,
                    can_publish_data=perm.can_publish_data,
                    can_update_own_metadata=perm.can_update_metadata,
                    hidden=perm.hidden,
                    agent=True,
                )
            )
        )
        return token.to_jwt()

    async def terminate(self, dispatch: agent_dispatch.AgentDispatch) -> None:
        """End the jobs of a dispatch on their workers."""
        for job in dispatch.state.jobs:
            worker = self.workers.get(job.state.worker_id)
            if worker is None or worker.jobs.pop(job.id, None) is None:
                continue
            with contextlib.suppress(ConnectionError, RuntimeError):
                await worker.send(agent.ServerMessage(termination=agent.JobTermination(job_id=job.id)))

    # -- the worker websocket ---------------------------------------------------------------

    async def serve(self, request: web.Request) -> web.StreamResponse:
        try:
            creds = self.keys.from_request(request)
            require_agent(creds)
        except AuthError as e:
            return web.Response(status=e.status, text=str(e))
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        first = await ws.receive()
        if first.type != WSMsgType.BINARY:
            await ws.close()
            return ws
        msg = agent.WorkerMessage.FromString(first.data)
        if msg.WhichOneof("message") != "register":
            await ws.close(message=b"expected register")
            return ws
        reg = msg.register
        worker = Worker(
            id=new_sid("AW_"),
            ws=ws,
            api_key=creds.api_key,
            agent_name=reg.agent_name,
            job_type=reg.type,
            permissions=reg.allowed_permissions,
        )
        await worker.send(
            agent.ServerMessage(register=agent.RegisterWorkerResponse(worker_id=worker.id, server_info=SERVER_INFO))
        )
        self.workers[worker.id] = worker
        log.info("worker %s registered (agent name %r)", worker.id, worker.agent_name)
        try:
            async for frame in ws:
                if frame.type == WSMsgType.BINARY:
                    await self._on_worker_message(worker, agent.WorkerMessage.FromString(frame.data))
        finally:
            del self.workers[worker.id]
            log.info("worker %s gone", worker.id)
        return ws

    async def _on_worker_message(self, worker: Worker, msg: agent.WorkerMessage) -> None:
        which = msg.WhichOneof("message")
        if which == "availability":
            waiter = worker.answers.get(msg.availability.job_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(msg.availability)
        elif which == "update_worker":
            if msg.update_worker.HasField("status"):
                worker.status = msg.update_worker.status
            worker.load = msg.update_worker.load
        elif which == "update_job":
            job = worker.jobs.get(msg.update_job.job_id)
            if job is not None:
                job.state.status = msg.update_job.status
                job.state.error = msg.update_job.error
                job.state.updated_at = time.time_ns()
                if msg.update_job.status in (agent.JobStatus.JS_SUCCESS, agent.JobStatus.JS_FAILED):
                    job.state.ended_at = time.time_ns()
                    worker.jobs.pop(job.id, None)
        elif which == "ping":
            now = int(time.time() * 1000)
            pong = agent.WorkerPong(last_timestamp=msg.ping.timestamp, timestamp=now)
            await worker.send(agent.ServerMessage(pong=pong))
