"""What the page's buttons ask of the worker: `end_turn` ("Done talking") ends the user's turn at once.

livekit-agents' push-to-talk convention: the frontend calls an RPC method on the agent, the agent commits the
user turn (`AgentSession.commit_user_turn`) instead of waiting for the silence that would otherwise end it.
"""

from __future__ import annotations

import logging

from livekit import rtc
from livekit.agents import AgentSession

from .protocol import ATTR_ROLE

logger = logging.getLogger(__name__)

RPC_END_TURN = "end_turn"


def register_page_controls(room: rtc.Room, session: AgentSession) -> None:
    async def end_turn(data: rtc.RpcInvocationData) -> str:
        caller = room.remote_participants.get(data.caller_identity)
        if caller is None or caller.attributes.get(ATTR_ROLE) in ("bridge", "worker"):
            raise rtc.RpcError(rtc.RpcError.ErrorCode.APPLICATION_ERROR, "end_turn is for people in the room")
        try:
            transcript = session.commit_user_turn()
        except RuntimeError as exc:  # the session is not running (yet, or any more)
            raise rtc.RpcError(rtc.RpcError.ErrorCode.APPLICATION_ERROR, str(exc)) from exc
        # the transcript reaches the converse service through the normal turn path; only note a failure here
        transcript.add_done_callback(lambda f: f.cancelled() or f.exception() is None or logger.info(
            "committed turn had no transcript: %s", f.exception()))
        logger.info("user turn ended by %s (Done talking)", data.caller_identity)
        return "ok"

    room.local_participant.register_rpc_method(RPC_END_TURN, end_turn)
