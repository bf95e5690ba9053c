"""The bridge's copy of every user turn a worker announced, until an answer carries it.

A worker's job holds the turns the user completes while no converse call waits; if that job dies (killed, or
replaced under load) or the answer that carried them never arrives (the call was given up), they would be gone.
So the worker announces each turn to the bridge the moment it takes it (`agent.protocol.TurnNotice`), and each
answer says which turns it carries (`delivered`) and which the worker still holds (`held`). `settle`:

1. drops from the answer a turn already returned: an id seen before, or the same words another job of the room
   heard within `SAME_TURN_WINDOW` seconds (two jobs in one room both hear the user);
2. adds, oldest first, every announced turn that no answer carried and that the answering worker does not hold:
   held by a job that is gone, or carried by an answer that was lost.

Bounded: at most `capacity` unreturned turns (beyond that the oldest is dropped, with an error in the log) and the
ids of the last `capacity` returned ones. A turn taken while no bridge was in the room is known only to its job.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

from agent.protocol import ConverseOk, Utterance

logger = logging.getLogger(__name__)

SAME_TURN_WINDOW = 10.0
"""Seconds apart two jobs may finish the same words of the user and still count as one turn."""


@dataclass(frozen=True)
class _Noticed:
    worker: str
    utterance: Utterance


@dataclass(frozen=True)
class _Returned:
    worker: str
    text: str
    received_at: float


def _words(text: str) -> str:
    return " ".join(text.split()).casefold()


class TurnLedger:
    def __init__(self, capacity: int = 1000) -> None:
        self._capacity = capacity
        self._unreturned: OrderedDict[str, _Noticed] = OrderedDict()
        self._returned: OrderedDict[str, _Returned] = OrderedDict()
        self.recovered_total = 0
        """Turns this bridge returned on behalf of a job (for logs and the load bench)."""

    @property
    def unreturned(self) -> int:
        return len(self._unreturned)

    def holds(self, text: str) -> bool:
        """Whether an unreturned announced turn contains `text` (tests wait on this before a fault)."""
        return any(text in noticed.utterance.text for noticed in self._unreturned.values())

    def noticed(self, worker: str, utterance: Utterance) -> None:
        """`worker` took `utterance` (its `TurnNotice` arrived)."""
        if utterance.id in self._returned or utterance.id in self._unreturned:
            return
        self._unreturned[utterance.id] = _Noticed(worker, utterance)
        while len(self._unreturned) > self._capacity:
            self._unreturned.popitem(last=False)
            logger.error(
                "more than %d announced turns unreturned: the bridge's copy of the oldest is dropped "
                "(its job still returns it if alive)",
                self._capacity,
            )

    def settle(self, worker: str, answer: ConverseOk) -> tuple[ConverseOk, list[Utterance]]:
        """`answer` from `worker` with turns already returned removed and the orphaned ones added (see module);
        also the list of turns added."""
        earlier = [turn for turn in answer.earlier if not self._already_returned(worker, turn)]
        reply = answer.reply if answer.reply is not None and not self._already_returned(worker, answer.reply) else None
        carried = [*answer.delivered, *(turn.id for turn in answer.earlier)]
        if answer.reply is not None:
            carried.append(answer.reply.id)
        for turn in [*earlier, *([reply] if reply is not None else [])]:
            self._mark_returned(worker, turn)
        for turn_id in carried:
            self._unreturned.pop(turn_id, None)

        still_held = set(answer.held)
        orphaned: list[Utterance] = []
        for turn_id, noticed in list(self._unreturned.items()):
            if noticed.worker == worker and turn_id in still_held:
                continue  # its job returns it with the next call
            del self._unreturned[turn_id]
            if self._already_returned(noticed.worker, noticed.utterance):
                continue
            orphaned.append(noticed.utterance)
            self._mark_returned(noticed.worker, noticed.utterance)
        if orphaned:
            self.recovered_total += len(orphaned)
            earlier = sorted([*earlier, *orphaned], key=lambda turn: turn.received_at)
        settled = answer.model_copy(
            update={"earlier": earlier, "reply": reply, "heard_speech": reply is not None or bool(earlier)}
        )
        return settled, orphaned

    def _mark_returned(self, worker: str, turn: Utterance) -> None:
        self._returned[turn.id] = _Returned(worker, _words(turn.text), turn.received_at)
        self._returned.move_to_end(turn.id)
        while len(self._returned) > self._capacity:
            self._returned.popitem(last=False)

    def _already_returned(self, worker: str, turn: Utterance) -> bool:
        if turn.id in self._returned:
            return True
        words = _words(turn.text)
        return any(
            seen.worker != worker
            and seen.text == words
            and abs(seen.received_at - turn.received_at) <= SAME_TURN_WINDOW
            for seen in self._returned.values()
        )
