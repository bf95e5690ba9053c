"""The MCP server as a client sees it: spawned over stdio by the real `mcp` SDK client."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

from tests.audio.pulse import VirtualAudio

ROOT = Path(__file__).resolve().parents[2]


def server_params(tmp_path: Path, **env: str) -> StdioServerParameters:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "LIVEKIT_"))}
    base |= {"VOICE_MCP_DATA_DIR": str(tmp_path / "data"), "VOICE_MCP_INPUT_DEVICE": "no-such-microphone"}
    return StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_bridge", "serve"], env=base | env, cwd=str(tmp_path)
    )


async def test_tools_resources_and_schemas(tmp_path: Path) -> None:
    async with Client(server_params(tmp_path)) as client:
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(tools) == {"converse", "voice_status", "create_join_link", "list_rooms", "room_status", "close_room"}
        converse = tools["converse"]
        # The description is sent with every request: a few hundred tokens at most.
        assert len(converse.description or "") < 900
        params = converse.input_schema["properties"]
        for name in (
            "message", "wait_for_response", "transport", "listen_duration_max", "listen_duration_min",
            "voice", "speed", "language", "audio_cues", "vad_aggressiveness", "disable_silence_detection",
        ):
            assert name in params, name
        assert converse.input_schema["required"] == ["message"]
        output = converse.output_schema or {}
        assert {"text", "heard_speech", "transport", "timings"} <= set(output.get("properties", {}))

        resources = (await client.list_resources()).resources
        assert [str(r.uri) for r in resources] == ["voice://guide"]
        guide = (await client.read_resource("voice://guide")).contents[0]
        assert "listen_duration_min" in guide.text


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"message": "   "}, "message is empty"),
        ({"message": "hi", "vad_aggressiveness": 9}, "vad_aggressiveness"),
        ({"message": "hi", "transport": "carrier-pigeon"}, "transport"),
        ({"message": "hi", "listen_duration_max": 1e9}, "less than or equal to 600"),
        ({"message": "x" * 10_001}, "Split it into several converse calls"),
    ],
)
async def test_bad_arguments_get_a_clear_error(tmp_path: Path, arguments: dict[str, object], expected: str) -> None:
    async with Client(server_params(tmp_path)) as client:
        result = await client.call_tool("converse", arguments)
        assert result.is_error
        text = result.content[0].text
        assert text.startswith("[invalid_argument] ") and expected in text, text


async def test_missing_microphone_is_a_clear_tool_error_not_a_hang(
    tmp_path: Path, virtual_audio: VirtualAudio
) -> None:
    params = server_params(tmp_path, **virtual_audio.env)  # a speaker exists; the named microphone does not
    async with Client(params, read_timeout_seconds=120) as client:
        result = await client.call_tool("converse", {"message": "Can you hear me?", "transport": "local"})
        assert result.is_error
        text = result.content[0].text
        assert "[audio_device]" in text
        assert "no-such-microphone" in text and "VOICE_MCP_INPUT_DEVICE" in text
        assert "Traceback" not in text
