"""Finding a voice-mcp worker in the room, asking it if it is alive, and dispatching one when none is."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from livekit import api, rtc

from agent.participants import is_user, workers_in_serving_order
from agent.protocol import RPC_PING, PingCall, PingReply

logger = logging.getLogger(__name__)

PING_TIMEOUT = 3.0
LEFT_POLL = 0.05
"""How often a ping checks that the participant it asks is still in the room."""
DISPATCH_PATIENCE = 15.0
"""A dispatch younger than this may still be starting: do not send another (a duplicate would leave again)."""


@dataclass(frozen=True)
class WorkerHandle:
    identity: str
    info: PingReply


def worker_candidates(room: rtc.Room) -> list[rtc.RemoteParticipant]:
    """Participants that may be voice-mcp workers, the one that keeps a contested room first (`agent.participants`)."""
    return workers_in_serving_order(room.remote_participants.values())


def users_present(room: rtc.Room, bridge_identity: str) -> bool:
    """Whether anybody the worker would listen to is in the room (the worker's own rule, `agent.participants`)."""
    return any(is_user(p, bridge_identity) for p in room.remote_participants.values())


_SILENT_CODES = {
    rtc.RpcError.ErrorCode.CONNECTION_TIMEOUT,
    rtc.RpcError.ErrorCode.RESPONSE_TIMEOUT,
    rtc.RpcError.ErrorCode.RECIPIENT_DISCONNECTED,
    rtc.RpcError.ErrorCode.RECIPIENT_NOT_FOUND,
}


@dataclass(frozen=True)
class PingResult:
    reply: PingReply | None
    silent: bool
    """True: nothing answered at all (a dead participant); False with no reply: alive but not serving yet."""


async def ping(room: rtc.Room, identity: str, within: float = PING_TIMEOUT) -> PingResult:
    """Ask `identity` whether it serves voice-mcp. A participant that leaves the room meanwhile (a crashed worker
    the server has just noticed) counts as silent at once, not after `within` seconds."""
    rpc = asyncio.ensure_future(
        asyncio.wait_for(
            room.local_participant.perform_rpc(
                destination_identity=identity,
                method=RPC_PING,
                payload=PingCall().model_dump_json(),
                response_timeout=within,
                max_round_trip_latency=within,
            ),
            timeout=within + 0.5,
        )
    )
    try:
        while not rpc.done():
            if identity not in room.remote_participants:
                return PingResult(None, silent=True)
            await asyncio.wait({rpc}, timeout=LEFT_POLL)
        payload = rpc.result()
    except TimeoutError:
        return PingResult(None, silent=True)
    except rtc.RpcError as exc:
        logger.debug("worker %s did not answer a ping: %s", identity, exc)
        return PingResult(None, silent=exc.code in _SILENT_CODES)
    finally:
        if not rpc.done():
            rpc.cancel()
    try:
        return PingResult(PingReply.model_validate_json(payload), silent=False)
    except ValueError:
        return PingResult(None, silent=False)


async def find_worker(room: rtc.Room, within: float, skip: set[str]) -> WorkerHandle | None:
    """The first worker, in serving order, that answers a ping. Identities that stay silent are added to `skip`."""
    for participant in worker_candidates(room):
        if participant.identity in skip:
            continue
        result = await ping(room, participant.identity, within)
        if result.reply is not None:
            return WorkerHandle(identity=participant.identity, info=result.reply)
        if result.silent:
            skip.add(participant.identity)
    return None


class Dispatcher:
    """Creates explicit agent dispatches for the room, at most one per `DISPATCH_PATIENCE` seconds."""

    def __init__(self, *, url: str, api_key: str, api_secret: str, room: str, agent_name: str) -> None:
        self._url = url
        self._api_key = api_key
        self._api_secret = api_secret
        self._room = room
        self._agent_name = agent_name
        self._last_dispatch = 0.0
        self.dispatches = 0

    def recently_dispatched(self) -> bool:
        return time.monotonic() - self._last_dispatch < DISPATCH_PATIENCE

    def forget(self) -> None:
        """The dispatched worker went away: the next request may dispatch again at once."""
        self._last_dispatch = 0.0

    async def dispatch(self, within: float) -> None:
        if self.recently_dispatched():
            return
        lkapi = api.LiveKitAPI(self._url, self._api_key, self._api_secret)
        try:
            await asyncio.wait_for(
                lkapi.agent_dispatch.create_dispatch(
                    api.CreateAgentDispatchRequest(agent_name=self._agent_name, room=self._room)
                ),
                timeout=within,
            )
        finally:
            await lkapi.aclose()
        self._last_dispatch = time.monotonic()
        self.dispatches += 1
        logger.info("dispatched agent %s to room %s", self._agent_name, self._room)
