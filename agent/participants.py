"""Who is who in a voice-mcp room — the one place both the worker and the bridge tell roles apart.

A worker is recognised by its identity prefix, its `voice-mcp.role` attribute or its participant kind (agent); the
bridge by its identity or role attribute; anybody else of a user kind is a user. Identity alone is enough, so this
works on servers that drop attributes. Several workers in one room are ordered by identity: the first one serves
the room (the others leave), and the bridge tries them in that order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from livekit import rtc

from .protocol import ATTR_ROLE, WORKER_IDENTITY_PREFIX

USER_KINDS = (
    rtc.ParticipantKind.PARTICIPANT_KIND_STANDARD,
    rtc.ParticipantKind.PARTICIPANT_KIND_SIP,
    rtc.ParticipantKind.PARTICIPANT_KIND_CONNECTOR,
)

P = TypeVar("P", bound=rtc.Participant)


def is_worker(participant: rtc.Participant) -> bool:
    return (
        participant.identity.startswith(WORKER_IDENTITY_PREFIX)
        or participant.attributes.get(ATTR_ROLE) == "worker"
        or participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT
    )


def is_bridge(participant: rtc.Participant, bridge_identity: str) -> bool:
    return participant.identity == bridge_identity or participant.attributes.get(ATTR_ROLE) == "bridge"


def is_user(participant: rtc.Participant, bridge_identity: str) -> bool:
    if is_worker(participant) or is_bridge(participant, bridge_identity):
        return False
    return participant.kind in USER_KINDS


def workers_in_serving_order(participants: Iterable[P]) -> list[P]:
    """The workers among `participants`, the one that keeps a contested room first."""
    return sorted((p for p in participants if is_worker(p)), key=lambda p: p.identity)
