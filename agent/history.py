"""The recent conversation in the room, kept by the worker so a device that joins can show it.

A turn is what one side said before the other side spoke: the assistant's spoken message (all its parts), or the
user's final transcripts from one device. At most `HISTORY_TURNS` turns are kept (the oldest go first). A
device that joins receives them as one JSON text stream on `TOPIC_HISTORY`; see docs/livekit-protocol.md.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from livekit import rtc
from livekit.agents import AgentSession, llm
from livekit.agents.voice.events import ConversationItemAddedEvent, UserInputTranscribedEvent

logger = logging.getLogger(__name__)

TOPIC_HISTORY = "voice-mcp.history"
HISTORY_TURNS = 20

Role = Literal["user", "assistant"]


@dataclass
class Turn:
    role: Role
    text: str
    identity: str
    """Who said it: the user's device (participant identity) or the worker."""
    at: float
    """Unix seconds of the turn's last words."""


class TranscriptHistory:
    def __init__(self, limit: int = HISTORY_TURNS) -> None:
        self._turns: deque[Turn] = deque(maxlen=limit)

    def add(self, role: Role, text: str, identity: str, at: float | None = None) -> None:
        text = text.strip()
        if not text:
            return
        at = time.time() if at is None else at
        last = self._turns[-1] if self._turns else None
        if last is not None and last.role == role and last.identity == identity:
            last.text = f"{last.text} {text}"
            last.at = at
            return
        self._turns.append(Turn(role=role, text=text, identity=identity, at=at))

    def turns(self) -> list[Turn]:
        return list(self._turns)

    def to_json(self) -> str:
        return json.dumps([asdict(turn) for turn in self._turns], ensure_ascii=False)

    def attach(
        self, session: AgentSession, *, user_identity: Callable[[], str | None], agent_identity: Callable[[], str]
    ) -> None:
        """Record the session's final user transcripts and the assistant's spoken messages."""

        def on_transcribed(event: UserInputTranscribedEvent) -> None:
            if event.is_final:
                self.add("user", event.transcript, user_identity() or "user", event.created_at)

        def on_item(event: ConversationItemAddedEvent) -> None:
            item = event.item
            if isinstance(item, llm.ChatMessage) and item.role == "assistant":
                self.add("assistant", item.text_content or "", agent_identity(), event.created_at)

        session.on("user_input_transcribed", on_transcribed)
        session.on("conversation_item_added", on_item)

    async def send(self, room: rtc.Room, identity: str) -> None:
        """The whole recent history to one participant (a snapshot: the receiver replaces what it shows)."""
        try:
            await room.local_participant.send_text(
                self.to_json(), topic=TOPIC_HISTORY, destination_identities=[identity]
            )
        except Exception as exc:  # the device can still follow the live transcription
            logger.warning("could not send the history to %s: %s", identity, exc)
