"""Pytest plugin: the loopback LiveKit server for any test directory (registered in tests/conftest.py).

Fixtures
--------
``livekit_network`` (session)
    Checks that this process runs inside the test network namespace (``tests/netns/run``):
    WebRTC needs a non-loopback interface, and the tests must not use the host's. Without it
    the test fails when ``CI=true`` and is skipped elsewhere, saying how to run it.
``livekit_server`` (session)
    A ``LiveKitServerProcess``: ``python -m tests.lkserver`` started as a developer would, on a
    free loopback port, with ``url``, ``http_url``, ``api_key``, ``api_secret``, ``token()``,
    ``api()`` and ``env()``.
``livekit_server_no_v1`` (session)
    The same, started with ``--no-single-pc``: ``/rtc/v1`` answers 404, so clients fall back to
    ``/rtc`` with two peer connections.
``livekit_server_legacy`` (session)
    The same, started with ``--legacy-protocol``: participants are announced with
    ``client_protocol`` 0, so SDKs use RPC v1 (``rpc_request``/``rpc_ack``/``rpc_response``).
``livekit_room_name`` (function)
    A room name no other test uses.
``livekit_connect`` (function)
    ``await livekit_connect(server, identity, room, **grants)`` connects a real ``rtc.Room``;
    every room it connected is disconnected at teardown.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import ifaddr
import pytest
from livekit import api, rtc

REPO_ROOT = Path(__file__).resolve().parents[2]
NETNS_SUBNET = ipaddress.ip_network("10.213.7.0/24")  # the veth pair tests/netns/run creates
RUN_HINT = "tests/netns/run .venv/bin/pytest tests/lkserver"
READY_PREFIX = "lkserver ready on "
START_TIMEOUT = 30.0
API_KEY, API_SECRET = "devkey", "secret-for-the-loopback-livekit-test-server"


def namespace_interfaces() -> list[str]:
    """Names of the interfaces carrying an address of the test namespace's subnet."""
    found = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and ipaddress.ip_address(ip.ip) in NETNS_SUBNET:
                found.append(adapter.nice_name)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveKitServerProcess:
    """``python -m tests.lkserver`` as a child process, and what a test needs to talk to it."""

    def __init__(self, *extra_args: str, api_key: str = API_KEY, api_secret: str = API_SECRET) -> None:
        self.api_key = api_key
        self.api_secret = api_secret
        self.port = free_port()
        self.url = f"ws://127.0.0.1:{self.port}"
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.extra_args = extra_args
        log = tempfile.NamedTemporaryFile(prefix="lkserver-", suffix=".log", delete=False)
        log.close()
        self.log_path = Path(log.name)
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        cmd = [
            sys.executable, "-m", "tests.lkserver",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--keys", f"{self.api_key}:{self.api_secret}",
            "--log-level", "INFO",
            *self.extra_args,
        ]  # fmt: skip
        with self.log_path.open("w") as log:
            self._proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
            )
        ready = threading.Event()
        first_line: list[str] = []

        def read_ready_line() -> None:
            assert self._proc is not None and self._proc.stdout is not None
            first_line.append(self._proc.stdout.readline())
            ready.set()

        threading.Thread(target=read_ready_line, daemon=True).start()
        if not ready.wait(START_TIMEOUT) or not first_line[0].startswith(READY_PREFIX):
            self.stop()
            raise RuntimeError(f"lkserver did not start: {first_line!r}\n{self.log_tail()}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    # -- helpers for tests ------------------------------------------------------------------

    def token(
        self,
        identity: str,
        room: str,
        *,
        name: str = "",
        metadata: str = "",
        attributes: dict[str, str] | None = None,
        kind: str = "",
        room_config: api.RoomConfiguration | None = None,
        ttl: datetime.timedelta | None = None,
        api_secret: str | None = None,
        **grants: Any,
    ) -> str:
        """A join token for ``identity`` in ``room``; ``grants`` are extra ``VideoGrants`` fields."""
        token = api.AccessToken(self.api_key, api_secret or self.api_secret).with_identity(identity)
        token = token.with_grants(api.VideoGrants(**{"room_join": True, "room": room, **grants}))
        if name:
            token = token.with_name(name)
        if metadata:
            token = token.with_metadata(metadata)
        if attributes:
            token = token.with_attributes(attributes)
        if kind:
            token = token.with_kind(kind)  # type: ignore[arg-type]
        if room_config is not None:
            token = token.with_room_config(room_config)
        if ttl is not None:
            token = token.with_ttl(ttl)
        return token.to_jwt()

    def api(self) -> api.LiveKitAPI:
        """A server API client (use ``async with``; it needs a running event loop)."""
        return api.LiveKitAPI(self.http_url, self.api_key, self.api_secret)

    def env(self) -> dict[str, str]:
        """``LIVEKIT_URL``/``LIVEKIT_API_KEY``/``LIVEKIT_API_SECRET`` for processes pointed at it."""
        return {"LIVEKIT_URL": self.url, "LIVEKIT_API_KEY": self.api_key, "LIVEKIT_API_SECRET": self.api_secret}


@pytest.fixture(scope="session")
def livekit_network() -> None:
    if namespace_interfaces():
        return
    message = (
        f"LiveKit tests need the private test network namespace ({NETNS_SUBNET} on a veth pair): "
        f"run them with `{RUN_HINT}`"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@contextlib.contextmanager
def _running(*args: str) -> Iterator[LiveKitServerProcess]:
    server = LiveKitServerProcess(*args)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def livekit_server(livekit_network: None) -> Iterator[LiveKitServerProcess]:
    with _running() as server:
        yield server


@pytest.fixture(scope="session")
def livekit_server_no_v1(livekit_network: None) -> Iterator[LiveKitServerProcess]:
    with _running("--no-single-pc") as server:
        yield server


@pytest.fixture(scope="session")
def livekit_server_legacy(livekit_network: None) -> Iterator[LiveKitServerProcess]:
    with _running("--legacy-protocol") as server:
        yield server


@pytest.fixture
def livekit_room_name(request: pytest.FixtureRequest) -> str:
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


Connect = Callable[..., Awaitable[rtc.Room]]


@pytest.fixture
async def livekit_connect() -> AsyncIterator[Connect]:
    rooms: list[rtc.Room] = []

    async def connect(
        server: LiveKitServerProcess,
        identity: str,
        room: str,
        *,
        options: rtc.RoomOptions | None = None,
        **token_args: Any,
    ) -> rtc.Room:
        lk_room = rtc.Room()
        rooms.append(lk_room)
        await lk_room.connect(server.url, server.token(identity, room, **token_args), options or rtc.RoomOptions())
        return lk_room

    yield connect
    for lk_room in rooms:
        with contextlib.suppress(Exception):
            await lk_room.disconnect()
