"""Unit tests of the multi-device and room pieces that need no server: the transcript history, the level meter,
who counts as a person, and the tools' errors without LiveKit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from livekit.protocol import models
from mcp import Client

from agent.devices import SPEECH_LEVEL_DBFS, level_dbfs
from agent.history import HISTORY_TURNS, TranscriptHistory
from mcp_bridge.livekit.rooms import LiveKitNotConfigured, RoomManager, participant_role
from mcp_bridge.server import create_server
from tests.speech_fixtures import clean_settings


def test_the_history_keeps_the_last_turns_and_joins_one_sides_parts() -> None:
    history = TranscriptHistory()
    history.add("assistant", "Part one.", "agent", at=1.0)
    history.add("assistant", "Part two.", "agent", at=2.0)
    history.add("user", "Yes.", "alice-phone", at=3.0)
    history.add("user", "And more.", "alice-desktop", at=4.0)
    history.add("user", "   ", "alice-desktop", at=5.0)
    assert json.loads(history.to_json()) == [
        {"role": "assistant", "text": "Part one. Part two.", "identity": "agent", "at": 2.0},
        {"role": "user", "text": "Yes.", "identity": "alice-phone", "at": 3.0},
        {"role": "user", "text": "And more.", "identity": "alice-desktop", "at": 4.0},
    ]
    for i in range(HISTORY_TURNS * 3):
        history.add("assistant" if i % 2 else "user", f"turn {i}", "x")
    turns = history.turns()
    assert len(turns) == HISTORY_TURNS and turns[-1].text == f"turn {HISTORY_TURNS * 3 - 1}"


def test_the_level_meter_tells_speech_from_room_noise() -> None:
    rng = np.random.default_rng(1)
    noise = (rng.standard_normal(1200) * 30).astype(np.int16)
    voice = (np.sin(np.linspace(0, 200, 1200)) * 3000).astype(np.int16)
    assert level_dbfs(noise) < SPEECH_LEVEL_DBFS < level_dbfs(voice)
    assert level_dbfs(np.zeros(0, dtype=np.int16)) < SPEECH_LEVEL_DBFS


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
