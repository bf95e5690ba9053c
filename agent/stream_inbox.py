"""Matching text-stream bodies to the request they belong to (both sides of `agent.protocol` use it)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict


class StreamInbox:
    """Matches text-stream bodies to request ids, whichever of body and request arrives first.

    Bounded: it keeps at most `capacity` unclaimed bodies and forgets the oldest first, so a peer that sends
    streams nobody asks for cannot grow it without limit.
    """

    def __init__(self, capacity: int = 32) -> None:
        self._capacity = capacity
        self._slots: OrderedDict[str, asyncio.Future[str]] = OrderedDict()

    def _slot(self, request_id: str) -> asyncio.Future[str]:
        slot = self._slots.get(request_id)
        if slot is None:
            slot = asyncio.get_running_loop().create_future()
            self._slots[request_id] = slot
            while len(self._slots) > self._capacity:
                _, dropped = self._slots.popitem(last=False)
                dropped.cancel()
        return slot

    def deliver(self, request_id: str, body: str) -> None:
        slot = self._slot(request_id)
        if not slot.done():
            slot.set_result(body)

    def fail(self, request_id: str, error: BaseException) -> None:
        slot = self._slot(request_id)
        if not slot.done():
            slot.set_exception(error)

    async def receive(self, request_id: str, within: float) -> str:
        """The body for `request_id`; raises TimeoutError when it does not arrive `within` seconds."""
        slot = self._slot(request_id)
        try:
            return await asyncio.wait_for(asyncio.shield(slot), within)
        finally:
            self._slots.pop(request_id, None)
            if not slot.done():
                slot.cancel()

    def discard(self, request_id: str) -> None:
        slot = self._slots.pop(request_id, None)
        if slot is not None and not slot.done():
            slot.cancel()

    def __len__(self) -> int:
        return len(self._slots)
