"""Fuzzing the tool arguments through the real MCP server (Hypothesis).

Every call goes through the MCP SDK's in-memory transport to the server `create_server` builds, with the real
`VoiceService` (its call lock, transport choice and exchange log) and a stand-in local transport that speaks and
hears nothing, so thousands of calls take seconds. A few more go through stdio to the real `python -m mcp_bridge`.

Whatever the arguments: the server answers within a bound (no hang), stays up (the next call works), and every
failure is a typed `[code]` error; a request that reaches the transport is within the documented bounds.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult

from agent.config import Settings
from agent.protocol import LISTEN_MAX_SECONDS, MESSAGE_MAX_CHARS
from mcp_bridge.server import create_server
from tests.speech_fixtures import clean_settings

from .stand_in import StandInService

TYPED = re.compile(r"^\[[a-z_]+\] \S")
CALL_BOUND = 30.0
EXAMPLES = int(os.environ.get("VOICE_MCP_FUZZ_EXAMPLES", "400"))
STDIO_EXAMPLES = int(os.environ.get("VOICE_MCP_FUZZ_STDIO_EXAMPLES", "25"))
calls_made = {"in_memory": 0, "stdio": 0}


class InMemorySession:
    """One in-memory MCP session on a loop of its own thread, so Hypothesis' synchronous examples can share it."""

    def __init__(self, settings: Settings) -> None:
        self.service = StandInService(settings)
        self.server = create_server(settings, self.service, prewarm=False)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-mcp-session", daemon=True)
        self.thread.start()
        self.client: Client | None = None
        self._ready: Future[None] = Future()
        self._close = asyncio.Event()
        self._main = asyncio.run_coroutine_threadsafe(self._hold(), self.loop)
        self._ready.result(timeout=60)

    async def _hold(self) -> None:
        async with Client(self.server) as client:
            self.client = client
            self._ready.set_result(None)
            await self._close.wait()

    def call(self, name: str, arguments: Any) -> CallToolResult:
        assert self.client is not None
        client = self.client
        work = asyncio.run_coroutine_threadsafe(
            asyncio.wait_for(client.call_tool(name, arguments), CALL_BOUND), self.loop
        )
        return work.result(timeout=CALL_BOUND + 5)  # raises TimeoutError on a hang: the example fails

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._close.set)
        self._main.result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InMemorySession]:
    data_dir = tmp_path_factory.mktemp("fuzz-data")
    settings = clean_settings(data_dir=data_dir)  # LiveKit not configured: transport="livekit" fails typed, at once
    s = InMemorySession(settings)
    yield s
    s.close()


# --- strategies -----------------------------------------------------------------------------------------------------

ARGUMENTS = (
    "message", "wait_for_response", "transport", "listen_duration_max", "listen_duration_min", "voice", "speed",
    "language", "audio_cues", "vad_aggressiveness", "disable_silence_detection",
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    st.sampled_from(["auto", "local", "livekit", "", " ", "\x00", "NaN", "Infinity", "1e309", "-0"]),
)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=8), inner, max_size=3), max_leaves=6)

messages = st.one_of(
    st.text(max_size=200),
    st.sampled_from(["", "   ", "\n\t", "Hello.", "\u202e\u0000\ufeff", "¿Qué tal? 你好。"]),
    st.builds(lambda ch, n: ch * n, st.sampled_from(["a", "é", "word ", ". ", "\U0001f600"]),
              st.integers(MESSAGE_MAX_CHARS - 3, MESSAGE_MAX_CHARS + 3)),
)
valid = {
    "wait_for_response": st.booleans(),
    "transport": st.sampled_from(["auto", "local"]),
    "listen_duration_max": st.floats(0.001, LISTEN_MAX_SECONDS),
    "listen_duration_min": st.floats(0.0, LISTEN_MAX_SECONDS),
    "voice": st.none(),
    "speed": st.floats(0.26, 4.0),
    "language": st.sampled_from(["en", "de", None]),
    "audio_cues": st.one_of(st.none(), st.booleans()),
    "vad_aggressiveness": st.integers(0, 3),
    "disable_silence_detection": st.booleans(),
}
edgy = {
    "wait_for_response": st.one_of(st.integers(-1, 2), st.sampled_from(["true", "no", ""])),
    "transport": st.one_of(st.sampled_from(["livekit", "LOCAL", "", "auto "]), st.text(max_size=12)),
    "listen_duration_max": st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                                     st.sampled_from([0.0, -0.0, 1e-300, 600.0, 600.0000001, 1e9, 2**63])),
    "listen_duration_min": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([-1e-9, 601])),
    "voice": st.text(max_size=30),
    "speed": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.25, 4.0000001, 0])),
    "language": st.text(max_size=10),
    "audio_cues": st.one_of(st.integers(-1, 2), st.text(max_size=3)),
    "vad_aggressiveness": st.one_of(st.integers(-(2**40), 2**40), st.floats(0, 3)),
    "disable_silence_detection": st.one_of(st.integers(-1, 2), st.text(max_size=3)),
}
good_messages = st.one_of(st.text(min_size=1, max_size=200).filter(str.strip), st.sampled_from(["Hello.", "OK?"]))


@st.composite
def converse_arguments(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly calls a client could well make, with some arguments (about one call in three) out of bounds, of the
    wrong type or unknown, so both the accepted and the rejected paths are exercised."""
    arguments: dict[str, Any] = {}
    which = draw(st.integers(0, 39))
    if which:  # now and then no message at all
        arguments["message"] = draw(good_messages if which > 12 else messages if which > 1 else json_values)
    for name in valid:
        if draw(st.booleans()):
            kind = draw(st.integers(0, 29))
            arguments[name] = draw(valid[name] if kind > 3 else edgy[name] if kind > 0 else json_values)
    if not draw(st.integers(0, 14)):
        arguments[draw(st.text(min_size=1, max_size=12))] = draw(json_values)
    return arguments


error_codes: Counter[str] = Counter()


def check(result: CallToolResult) -> None:
    if result.is_error:
        text = result.content[0].text if result.content else ""
        assert TYPED.match(text), f"untyped failure: {text[:300]!r}"
        assert "Traceback" not in text
        error_codes[text[1:text.index("]")]] += 1
    else:
        content = result.structured_content or {}
        assert content.get("transport") == "local"


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(arguments=converse_arguments())
def test_any_converse_arguments_get_a_result_or_a_typed_error(session: InMemorySession, arguments: dict) -> None:
    check(session.call("converse", arguments))
    calls_made["in_memory"] += 1


@settings(max_examples=max(50, EXAMPLES // 4), deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.one_of(st.text(max_size=20), st.sampled_from(["converse", "voice_status", "", "Converse"])),
       arguments=st.one_of(st.none(), st.dictionaries(st.text(max_size=10), json_values, max_size=4)))
def test_any_tool_name_and_argument_shape_gets_a_typed_answer(
    session: InMemorySession, name: str, arguments: dict | None
) -> None:
    if name == "voice_status":
        return  # real provider health checks: covered by the doctor and status tests, and slow per example
    check(session.call(name, arguments))
    calls_made["in_memory"] += 1


@pytest.mark.parametrize("value", [600.5, 1e9])
def test_too_long_listening_is_refused(session: InMemorySession, value: float) -> None:
    result = session.call("converse", {"message": "hi", "listen_duration_max": value})
    assert result.is_error and result.content[0].text.startswith("[invalid_argument] listen_duration_max"), result


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_non_finite_listening_is_refused(session: InMemorySession, value: float) -> None:
    """The MCP client sends a non-finite float as null, but a raw JSON client can send `Infinity`: the server's
    own `call_tool` gets the float as such."""
    work = asyncio.run_coroutine_threadsafe(
        session.server.call_tool("converse", {"message": "hi", "listen_duration_max": value}), session.loop
    )
    with pytest.raises(ToolError, match=r"^\[invalid_argument\] listen_duration_max"):
        work.result(timeout=CALL_BOUND)


def test_the_fuzzed_server_still_serves_and_only_bounded_requests_reached_the_transport(
    session: InMemorySession,
) -> None:
    result = session.call("converse", {"message": "Still there?"})
    assert not result.is_error, result.content
    assert session.service.stand_in.requests, "no fuzzed call reached the transport: the strategies are too narrow"
    print(f"fuzz: {calls_made['in_memory']} in-memory calls, {len(session.service.stand_in.requests)} reached the "
          f"transport, typed errors: {dict(error_codes)}")


# --- a few through stdio, to the real server process ---------------------------------------------------------------


def stdio_params(data_dir: Path) -> StdioServerParameters:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    # no sound server at all: arguments that pass validation end in a typed [audio_device] error, fast
    env |= {"VOICE_MCP_DATA_DIR": str(data_dir), "PULSE_SERVER": f"unix:{data_dir}/no-such-pulse",
            "VOICE_MCP_INPUT_DEVICE": "no-such-microphone"}
    return StdioServerParameters(command=sys.executable, args=["-m", "mcp_bridge"], env=env, cwd=str(data_dir))


async def test_fuzzed_arguments_over_stdio_get_typed_errors(tmp_path: Path) -> None:
    examples: list[dict[str, Any]] = []

    @settings(max_examples=STDIO_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(arguments=converse_arguments())
    def collect(arguments: dict[str, Any]) -> None:
        examples.append(arguments)

    collect()
    async with Client(stdio_params(tmp_path), read_timeout_seconds=240) as client:
        for arguments in examples:
            arguments = {**arguments, "transport": "local"} if isinstance(arguments, dict) else arguments
            result = await asyncio.wait_for(client.call_tool("converse", arguments), 240)
            assert result.is_error, result.content  # no audio device: nothing can succeed
            check(result)
            calls_made["stdio"] += 1
        still = await asyncio.wait_for(client.call_tool("converse", {"message": "hi", "transport": "local"}), 240)
        assert still.is_error and still.content[0].text.startswith("[audio_device] ")
    print(f"fuzz: {calls_made['stdio']} stdio calls")
