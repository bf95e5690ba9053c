"""Fixtures for the LiveKit end-to-end tests (run them with `tests/netns/run .venv/bin/pytest tests/e2e_livekit`).

Tests marked `livekit` need the private network namespace of `tests/netns/run` (ICE needs a non-loopback
interface); outside it they skip, or fail when CI=true. Fixtures for other test packages (e.g. an MCP stdio test
against the LiveKit path): `lk_server`, `lk_worker`, `lk_settings(room=...)`, `lk_user`, `whisper`, `piper`.
`VOICE_MCP_JOB_EXECUTOR=thread` in the test run's environment runs every worker's jobs as threads
(`harness.PASSED_SETTINGS`); tests that kill or stop one job process pin `process`.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from livekit import api, rtc

from agent.config import Settings
from agent.speech import PiperTTS
from tests.speech_fixtures import clean_settings

from .harness import (
    ServerProcess,
    TestUser,
    WorkerProcess,
    inside_test_netns,
    publisher_hears_of_subscriptions,
    start_server,
    start_worker,
)


@pytest.fixture(scope="session")
def _require_netns() -> None:
    if inside_test_netns():
        return
    message = "LiveKit e2e tests need the private network namespace: run them via tests/netns/run"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def lk_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("livekit-e2e")


@pytest.fixture(scope="session")
def lk_server(_require_netns: None, lk_logs: Path) -> Iterator[ServerProcess]:
    server = start_server(lk_logs)
    try:
        if not asyncio.run(publisher_hears_of_subscriptions(server)):
            pytest.fail(
                "the LiveKit server never sends a publisher SignalResponse.track_subscribed for its subscribed "
                "track; livekit-agents plays no agent speech until it does, so every converse would hang"
            )
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def lk_worker(lk_server: ServerProcess, lk_logs: Path) -> Iterator[WorkerProcess]:
    """The worker of one test module (agent name `voice-mcp`). Tests that kill a worker start their own under another
    name. One per module, not per session: a module's faults (a network cut inside the namespace, a restarted
    server) must not leave the next module a worker in a state no user would meet, and jobs do not pile up."""
    worker = start_worker(lk_server, lk_logs)
    yield worker
    worker.stop()


@pytest.fixture
def start_lk_worker(lk_server: ServerProcess, lk_logs: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        worker = start_worker(lk_server, lk_logs, {k.upper(): v for k, v in env.items()})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()




@pytest.fixture
async def lk_room(lk_server: ServerProcess) -> AsyncIterator[str]:
    """A fresh room for one test, deleted afterwards: the shared worker keeps a job (a process running VAD) in
    every room it was dispatched to, and the rooms of earlier tests would otherwise load the 2-core machine more
    with every test that follows."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    yield name
    lkapi = api.LiveKitAPI(lk_server.url, lk_server.api_key, lk_server.api_secret)
    try:
        await asyncio.wait_for(lkapi.room.delete_room(api.DeleteRoomRequest(room=name)), 30)
    except Exception:  # never created, or already closed by the test itself
        pass
    finally:
        await lkapi.aclose()


@pytest.fixture
def lk_settings(lk_server: ServerProcess, lk_room: str) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "livekit_url": lk_server.url,
            "livekit_api_key": lk_server.api_key,
            "livekit_api_secret": lk_server.api_secret,
            "room": lk_room,
            "livekit_timeout": 8.0,
        }
        values.update(overrides)
        return clean_settings(**values)

    return make


@pytest.fixture
async def lk_user(lk_server: ServerProcess, lk_room: str) -> AsyncIterator[TestUser]:
    user = await TestUser.join(lk_server, lk_room)
    yield user
    await user.leave()




async def synthesize(piper: PiperTTS, text: str) -> rtc.AudioFrame:
    return await piper.synthesize(text).collect()


async def wait_until(
    predicate: Callable[[], bool],
    within: float,
    what: str,
    step: float = 0.1,
    received: Callable[[], object] | None = None,
) -> None:
    """`received`: what arrived instead, shown when the wait times out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            seen = "" if received is None else f"; received: {received()!r}"
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}{seen}")
        await asyncio.sleep(step)
