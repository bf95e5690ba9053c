"""How fast `auto` falls back to the local loop once the worker is gone (the target is ≤ 1 s).

Inside the private network namespace: the loopback server, a `python -m agent start` worker (speech stubbed by
`FastTTSServer`, so it starts quickly), a user and the bridge's `LiveKitTransport` with the default patience
(`VOICE_MCP_LIVEKIT_TIMEOUT` = 5 s). Each iteration SIGKILLs the worker (and its job processes) and measures:

- `fallback_worker_left_notice`: SIGKILL → the bridge hears that the worker participant left the room;
- `fallback_decision`: `choose_transport("auto")` called → it returns the local loop (the local transport itself is
  not built here: only the decision is timed);
- `fallback_kill_to_decision`: SIGKILL → decision, with the call made the moment the kill was sent (the worst
  case: the bridge has not heard of the departure yet).

Before this change the decision waited the whole `VOICE_MCP_LIVEKIT_TIMEOUT` (5 s by default).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from livekit import rtc

from mcp_bridge.converse_types import VoiceError
from mcp_bridge.livekit import LiveKitTransport
from mcp_bridge.transport_choice import choose_transport
from tests.e2e_livekit.fast_tts import FastTTSServer
from tests.e2e_livekit.harness import TestUser, start_server, start_worker

from .harness import Measurement
from .settings import bench_settings

AGENT = "voice-mcp-bench-fallback"
WAIT = 180.0


async def linked_worker(transport: LiveKitTransport, user: str, within: float = WAIT) -> str:
    """The identity of the worker once it listens to `user` (the fallback and load parts both wait for this)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            worker = await transport.ensure_worker(30.0)
        except VoiceError:
            continue
        if worker.info.user_identity == user:
            return worker.identity
        await asyncio.sleep(0.2)
    raise RuntimeError(f"no worker listened to {user} in room {transport.settings.room}")


async def run_fallback(*, iterations: int, out: Path) -> list[Measurement]:
    logs = out / "logs" / time.strftime("fallback-%Y%m%d-%H%M%S")
    logs.mkdir(parents=True, exist_ok=True)
    server = start_server(logs)
    room = f"fallback-{uuid.uuid4().hex[:6]}"
    notice: list[float | None] = []
    decision: list[float | None] = []
    kill_to_decision: list[float | None] = []
    reasons: list[str] = []
    local = object()
    try:
        async with FastTTSServer() as stub:
            env = {"VOICE_MCP_AGENT_NAME": AGENT, "VOICE_MCP_TTS": stub.base_url, "VOICE_MCP_STT": stub.base_url}
            user = await TestUser.join(server, room, identity="fallback-user")
            settings = bench_settings(
                livekit_url=server.url,
                livekit_api_key=server.api_key,
                livekit_api_secret=server.api_secret,
                room=room,
                agent_name=AGENT,
            )
            transport = LiveKitTransport(settings, worker_start_timeout=WAIT)
            try:
                for i in range(iterations * 2):
                    worker = await asyncio.to_thread(start_worker, server, logs, env)
                    identity = await linked_worker(transport, "fallback-user")
                    left = asyncio.Event()
                    left_at: list[float] = []

                    def on_left(
                        participant: rtc.RemoteParticipant,
                        who: str = identity,
                        left: asyncio.Event = left,
                        left_at: list[float] = left_at,
                    ) -> None:
                        if participant.identity == who and not left.is_set():
                            left_at.append(time.perf_counter())
                            left.set()

                    undo = transport.link.on_participant_left(on_left)
                    killed = time.perf_counter()
                    await asyncio.to_thread(worker.kill)
                    if i % 2 == 1:  # decide at once, while the departure may still be on its way
                        chosen, reason = await choose_transport(
                            "auto", settings, livekit=transport, local_factory=lambda: local  # type: ignore[arg-type,return-value]
                        )
                        kill_to_decision.append((time.perf_counter() - killed) * 1000 if chosen is local else None)
                        reasons.append(reason)
                        await asyncio.wait_for(left.wait(), 60)
                    else:
                        await asyncio.wait_for(left.wait(), 60)
                        notice.append((left_at[0] - killed) * 1000)
                        started = time.perf_counter()
                        chosen, reason = await choose_transport(
                            "auto", settings, livekit=transport, local_factory=lambda: local  # type: ignore[arg-type,return-value]
                        )
                        decision.append((time.perf_counter() - started) * 1000 if chosen is local else None)
                        reasons.append(reason)
                    undo()
            finally:
                await transport.aclose()
                await user.leave()
    finally:
        server.stop()
    return [
        Measurement.of("fallback_worker_left_notice", "ms", notice, "SIGKILL → the bridge hears the worker left"),
        Measurement.of(
            "fallback_decision", "ms", decision, "auto → local loop once the departure is known (target ≤ 1000)",
            reasons=sorted(set(reasons)),
        ),
        Measurement.of(
            "fallback_kill_to_decision", "ms", kill_to_decision,
            "auto called the moment the worker is SIGKILLed → local loop (was: VOICE_MCP_LIVEKIT_TIMEOUT, 5000)",
        ),
    ]
