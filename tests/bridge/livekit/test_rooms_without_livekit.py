"""The room tools and who counts as a person, without a LiveKit server (nothing configured, or the server's
participant records as given)."""

from __future__ import annotations

import pytest
from livekit.protocol import models
from mcp import Client

from mcp_bridge.livekit.rooms import LiveKitNotConfigured, RoomManager, participant_role
from mcp_bridge.server import create_server
from tests.speech_fixtures import clean_settings


@pytest.mark.parametrize(
    ("identity", "kind", "attributes", "role"),
    [
        ("alice-phone", models.ParticipantInfo.Kind.STANDARD, {}, "user"),
        ("sip-caller", models.ParticipantInfo.Kind.SIP, {}, "user"),
        ("voice-mcp-bridge", models.ParticipantInfo.Kind.STANDARD, {}, "bridge"),
        ("other-bridge", models.ParticipantInfo.Kind.STANDARD, {"voice-mcp.role": "bridge"}, "bridge"),
        ("voice-mcp-agent-AJ_1", models.ParticipantInfo.Kind.AGENT, {}, "worker"),
        ("someone-elses-agent", models.ParticipantInfo.Kind.AGENT, {}, "agent"),
        ("recorder", models.ParticipantInfo.Kind.EGRESS, {}, "other"),
    ],
)
def test_who_counts_as_a_person(identity: str, kind: int, attributes: dict[str, str], role: str) -> None:
    info = models.ParticipantInfo(identity=identity, kind=kind, attributes=attributes)  # type: ignore[arg-type]
    assert participant_role(info, "voice-mcp-bridge") == role


def test_the_room_manager_needs_livekit() -> None:
    with pytest.raises(LiveKitNotConfigured):
        RoomManager(clean_settings())


async def test_room_tools_without_livekit_say_what_to_set(tmp_path: object) -> None:
    settings = clean_settings(data_dir=tmp_path)
    async with Client(create_server(settings, prewarm=False)) as client:
        for tool, args in (("list_rooms", {}), ("room_status", {}), ("close_room", {"room": "x"})):
            result = await client.call_tool(tool, args)
            assert result.is_error
            text = result.content[0].text  # type: ignore[union-attr]
            assert "[livekit_not_configured]" in text and "LIVEKIT_URL" in text, text
