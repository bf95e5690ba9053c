"""Running cleanup to its end even while the call that owns it is being cancelled.

A cancelled MCP call is cancelled through anyio's cancel scopes, which deliver the cancellation again at every
`await` until the task leaves the scope; plain asyncio cancels once. `finish(work)` runs `work` as its own task
behind both an anyio shield (no re-delivery, no busy loop) and `asyncio.shield`, waits for it, and re-raises the
cancellation afterwards. `work` itself must be bounded in time: nothing can interrupt it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


async def finish(work: Coroutine[Any, Any, T]) -> T:
    """The result of `work`, awaited to the end; a cancellation meanwhile is re-raised once it is done."""
    task = asyncio.ensure_future(work)
    cancelled = False
    with anyio.CancelScope(shield=True):
        while not task.done():
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()
