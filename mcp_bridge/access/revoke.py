"""`voice-mcp link --revoke-all`: end every code and device session, and put the devices out of the room now.

A room connection is not re-checked against its token, so revoking the sessions alone would leave a connected
phone in the room until it next reconnects; the RoomService removes it at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from livekit import api

from agent.config import Settings

from .device_tokens import device_identity
from .store import AccessStore

logger = logging.getLogger(__name__)


@dataclass
class Revoked:
    codes: int
    sessions: int
    removed: list[str] = field(default_factory=list)  # identities put out of the room
    room_error: str | None = None  # why the room could not be reached, when it could not


async def revoke_all(settings: Settings) -> Revoked:
    store = AccessStore.in_data_dir(settings.data_dir)
    devices = store.devices()
    codes, sessions = store.revoke_all()
    revoked = Revoked(codes, sessions)
    if not (settings.livekit_configured and devices):
        return revoked
    lkapi = api.LiveKitAPI(settings.livekit_url, settings.livekit_api_key, settings.livekit_api_secret)
    try:
        present = {p.identity for p in (await lkapi.room.list_participants(
            api.ListParticipantsRequest(room=settings.room))).participants}
        for identity in sorted(present & {device_identity(d) for d in devices}):
            await lkapi.room.remove_participant(api.RoomParticipantIdentity(room=settings.room, identity=identity))
            revoked.removed.append(identity)
    except Exception as exc:  # the codes and sessions are gone either way; say what could not be done
        revoked.room_error = str(exc) or type(exc).__name__
    finally:
        await lkapi.aclose()
    return revoked
