"""Waiting for somebody to listen never breaks the room's audio output (agent.playback).

livekit-agents' room audio output has one `subscribed` future; a task cancelled while awaiting it directly cancels
it for good, and nothing the worker says plays again. The worker's wait is shielded: a timeout or a cancelled call
leaves the future pending, and a later subscription still resolves it.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from agent.playback import NOBODY_LISTENS, nothing_played_reason, somebody_listens, wait_for_listener


def session_with_output() -> tuple[SimpleNamespace, asyncio.Future[None]]:
    """A session whose room audio output sits behind a wrapper, as with the transcript synchronizer."""
    subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    room_output = SimpleNamespace(subscribed=subscribed, next_in_chain=None)
    wrapper = SimpleNamespace(next_in_chain=room_output)
    return SimpleNamespace(output=SimpleNamespace(audio=wrapper)), subscribed


async def test_a_timed_out_wait_leaves_the_subscription_pending() -> None:
    session, subscribed = session_with_output()
    assert not await wait_for_listener(session, 0.05)
    assert not subscribed.done()
    assert nothing_played_reason(session) == NOBODY_LISTENS
    subscribed.set_result(None)  # somebody subscribes later
    assert somebody_listens(session)
    assert await wait_for_listener(session, 0.05)


async def test_a_cancelled_call_leaves_the_subscription_pending() -> None:
    session, subscribed = session_with_output()
    waiting = asyncio.ensure_future(wait_for_listener(session, 60))
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert not subscribed.cancelled()
    subscribed.set_result(None)
    assert somebody_listens(session)


async def test_a_subscription_during_the_wait_ends_it() -> None:
    session, subscribed = session_with_output()
    asyncio.get_running_loop().call_later(0.05, subscribed.set_result, None)
    assert await wait_for_listener(session, 60)


async def test_a_session_without_a_room_output_always_has_a_listener() -> None:
    console = SimpleNamespace(output=SimpleNamespace(audio=SimpleNamespace(next_in_chain=None)))
    assert somebody_listens(console)
    assert await wait_for_listener(console, 0.01)


async def test_a_cancelled_subscription_is_named_as_such() -> None:
    session, subscribed = session_with_output()
    subscribed.cancel()
    assert not somebody_listens(session)
    assert not await wait_for_listener(session, 60)
    assert "cancelled" in nothing_played_reason(session)
