"""The MCP layer in memory: the real server and SDK client (`mcp.Client(server)`), a stand-in `VoiceService`.

What is tested here is the MCP layer's own job — arguments to a `ConverseRequest` (every argument reaches it and
both transports), validation, `VoiceError` → tool error, progress, and the lifespan owning the service. The
stdio tests (`test_mcp_stdio.py`) keep the end-to-end view of a spawned server.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, get_args

import pytest
from mcp import Client

from agent.config import Settings
from mcp_bridge.converse_types import (
    ConverseRequest,
    ConverseResult,
    ProgressCallback,
    RequestedTransport,
    Stage,
    TransportUnavailable,
    build_request,
    no_progress,
)
from mcp_bridge.livekit.transport import converse_call
from mcp_bridge.server import create_server
from mcp_bridge.service import StatusReport, VoiceService
from tests.speech_fixtures import clean_settings


class StandInService(VoiceService):
    """Records what the tools ask for; answers without audio. `fail` makes converse raise it."""

    instances: ClassVar[list[StandInService]] = []

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.calls: list[tuple[ConverseRequest, RequestedTransport]] = []
        self.fail: BaseException | None = None
        self.closed = False
        self.prewarm_cancelled = False
        self.in_call = asyncio.Event()
        self.release: asyncio.Event | None = None
        StandInService.instances.append(self)

    async def prewarm(self) -> None:
        try:
            await asyncio.Event().wait()  # warms "forever": only the lifespan's cancel ends it
        except asyncio.CancelledError:
            self.prewarm_cancelled = True
            raise

    async def converse(
        self, request: ConverseRequest, transport: RequestedTransport = "auto", progress: ProgressCallback = no_progress
    ) -> ConverseResult:
        self.calls.append((request, transport))
        for stage in (Stage.SPEAKING, Stage.LISTENING, Stage.TRANSCRIBING, Stage.DONE):
            await progress(stage, stage.value)
        self.in_call.set()
        if self.release is not None:
            await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return ConverseResult(text="yes", heard_speech=True, transport="local", ignored_options=["voice"])

    async def status(self) -> StatusReport:
        return StatusReport(providers=[], transports=[], settings=self.public_settings())

    async def aclose(self) -> None:
        self.closed = True
        await super().aclose()


@pytest.fixture
def settings(tmp_path: Any) -> Settings:
    return clean_settings(data_dir=tmp_path)


def connect(settings: Settings) -> Client:
    """An in-memory client of a fresh server (used as `async with`: the SDK's task groups need one task)."""
    StandInService.instances.clear()
    return Client(create_server(settings, StandInService, prewarm=False), raise_exceptions=True)


def service() -> StandInService:
    assert len(StandInService.instances) == 1
    return StandInService.instances[0]


async def tool_schema(client: Client) -> dict[str, Any]:
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    return tools["converse"].input_schema


# --- every argument reaches the request and both transports ------------------------------------------------------

NON_DEFAULT: dict[str, object] = {
    "wait_for_response": False,
    "listen_duration_max": 7.0,
    "listen_duration_min": 0.5,
    "voice": "en-gb",
    "speed": 1.5,
    "language": "de",
    "audio_cues": False,
    "vad_aggressiveness": 0,
    "disable_silence_detection": True,
}


async def test_every_converse_argument_reaches_the_request_and_the_wire(settings: Settings) -> None:
    async with connect(settings) as client:
        schema = await tool_schema(client)
        arguments = set(schema["properties"]) - {"message", "transport"}
        assert arguments == set(NON_DEFAULT), "a new converse argument needs a value here (and a home in the request)"

        await client.call_tool("converse", {"message": "hi"})
        baseline = service().calls[-1][0]
        assert baseline == build_request(settings, message="hi"), "the tool uses the same defaults as the CLI"
        for name, value in NON_DEFAULT.items():
            await client.call_tool("converse", {"message": "hi", name: value})
            request = service().calls[-1][0]
            assert request != baseline, f"{name} was dropped before the request"
            # LiveKit: the request's options are the wire's (`agent.protocol` defines them once); local: the request
            call = converse_call(request)
            assert (call.wait_for_response, call.listen, call.speak) == (
                request.wait_for_response, request.listen, request.speak
            ), name


async def test_transport_choice_reaches_the_service(settings: Settings) -> None:
    async with connect(settings) as client:
        schema = await tool_schema(client)
        assert tuple(schema["properties"]["transport"]["enum"]) == get_args(RequestedTransport)
        for transport in get_args(RequestedTransport):
            await client.call_tool("converse", {"message": "hi", "transport": transport})
            assert service().calls[-1][1] == transport


# --- validation and errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"message": "   "}, "message is empty"),
        ({"message": "hi", "vad_aggressiveness": 9}, "vad_aggressiveness"),
        ({"message": "hi", "speed": 9}, "speed"),
        ({"message": "hi", "transport": "carrier-pigeon"}, "transport"),
    ],
)
async def test_bad_arguments_get_a_clear_error_and_never_reach_the_service(
    settings: Settings, arguments: dict[str, object], expected: str
) -> None:
    async with connect(settings) as client:
        result = await client.call_tool("converse", arguments)
        assert result.is_error and expected in result.content[0].text
        assert service().calls == []


def test_defaults_raise_value_error_outside_the_mcp_layer(settings: Settings) -> None:
    with pytest.raises(ValueError, match="message is empty"):
        build_request(settings, message=" ")
    with pytest.raises(ValueError):
        build_request(settings, message="hi", speed=100.0)


async def test_a_voice_error_is_a_tool_error_with_its_code_and_hint(settings: Settings) -> None:
    async with connect(settings) as client:
        await client.call_tool("converse", {"message": "warm up"})
        service().fail = TransportUnavailable("no worker answered", "start one with `python -m agent start`")
        result = await client.call_tool("converse", {"message": "hi"})
        assert result.is_error
        assert result.content[0].text == (
            "[transport_unavailable] no worker answered. Start one with `python -m agent start`."
        )


async def test_a_result_comes_back_structured_with_what_was_ignored(settings: Settings) -> None:
    async with connect(settings) as client:
        result = await client.call_tool("converse", {"message": "hi"})
        assert not result.is_error
        assert result.structured_content is not None
        assert result.structured_content["text"] == "yes" and result.structured_content["ignored_options"] == ["voice"]


# --- progress ------------------------------------------------------------------------------------------------------


async def test_progress_reaches_the_client_in_stage_order(settings: Settings) -> None:
    async with connect(settings) as client:
        seen: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, total, message))

        result = await client.call_tool("converse", {"message": "hi"}, progress_callback=on_progress)
        assert not result.is_error
        assert [p for p, _, _ in seen] == [1, 2, 3, 4]
        assert all(total == 5 for _, total, _ in seen)  # waiting, speaking, listening, transcribing, done
        assert seen[0][2] is not None and seen[0][2].startswith("speaking")


async def test_a_failing_progress_sink_does_not_cost_the_reply(settings: Settings) -> None:
    """The service guards progress once (`mcp_bridge.converse_types.guarded`): a sink that raises is only logged."""
    from mcp_bridge.converse_types import guarded

    async def broken(stage: Stage, message: str) -> None:
        raise ConnectionError("client went away")

    await guarded(broken)(Stage.SPEAKING, "hi")  # does not raise


# --- the lifespan owns the service ---------------------------------------------------------------------------------


async def test_the_lifespan_builds_the_service_and_closes_it_after_cancelling_prewarm(settings: Settings) -> None:
    StandInService.instances.clear()
    # a prewarm that never finishes (a model load that hangs): stopping gives it its grace, then cancels it
    async with Client(create_server(settings, StandInService, prewarm_grace=0.05)) as connected:
        await connected.call_tool("voice_status", {})
        built = service()
        assert not built.closed
    assert built.closed and built.prewarm_cancelled


async def test_voice_status_comes_from_the_lifespan_service(settings: Settings) -> None:
    async with connect(settings) as client:
        result = await client.call_tool("voice_status", {})
        assert not result.is_error
        assert result.structured_content is not None and result.structured_content["settings"]["room"] == "voice-mcp"
