"""`voice-mcp rooms`: the LiveKit rooms as the RoomService API sees them, as a table or JSON.

It uses the API only and never joins a room: joining as the bridge's identity would push a running bridge out.
So workers are listed, not pinged (the `room_status` tool of a running bridge pings them).
"""

from __future__ import annotations

import datetime
import json
import sys

from agent.config import Settings

from .converse_types import VoiceError
from .livekit.rooms import RoomList, RoomManager

EXIT_FAILED = 1
EXIT_CONFIG = 2


async def run_rooms(settings: Settings, *, as_json: bool) -> int:
    try:
        listing = await RoomManager(settings).list_rooms()
    except VoiceError as exc:
        print(f"voice-mcp: [{exc.code}] {exc}", file=sys.stderr)
        return EXIT_CONFIG if exc.code == "livekit_not_configured" else EXIT_FAILED
    if as_json:
        print(json.dumps(listing.model_dump(mode="json"), indent=2))
    else:
        print(format_rooms(listing))
    return 0


def format_rooms(listing: RoomList) -> str:
    timeout = listing.cleanup.idle_timeout_s
    lines = [
        f"persistent room: {listing.persistent_room}; idle rooms are deleted after "
        + (f"{timeout:g} s without a person" if timeout > 0 else "never (VOICE_MCP_ROOM_IDLE_TIMEOUT=0)")
    ]
    if not listing.rooms:
        lines.append("no rooms on the server")
    for room in listing.rooms:
        mark = " (persistent)" if room.persistent else ""
        worker = "worker present" if room.worker_present else "no worker"
        lines.append(
            f"{room.name}{mark}: {len(room.participants)} participants, {room.humans} people, {worker}, "
            f"created {_when(room.created_at)}, last activity {_when(room.last_activity_at)}"
        )
        for p in room.participants:
            lines.append(f"  {p.identity:<40} {p.role:<7} {p.kind}")
    return "\n".join(lines)


def _when(unix: float | None) -> str:
    if unix is None:
        return "unknown"
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
