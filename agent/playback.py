"""Why a message the worker was asked to speak did not play, and how long to wait for its first audio.

livekit-agents' room audio output holds every frame until somebody in the room has subscribed to the worker's
audio track. A frontend that has not subscribed yet (or a server that never says so) therefore makes `say()`
wait silently; the converse call must say that, soon, instead of reporting a message as spoken after a long
silence or as a bare timeout.

The wait for a subscriber must happen here, before `say()`, never inside livekit's speech task: that task waits on
the output's one `subscribed` future, and interrupting the task (the first-audio watchdog, a user speaking over a
cue) cancels that future for good — the room then stayed silent for every later call, even once somebody
subscribed. `wait_for_listener` waits on a shield, so a timeout or a cancelled call leaves the future alone.
"""

from __future__ import annotations

import asyncio
from typing import Any

FIRST_AUDIO_WITHIN = 20.0
"""Seconds from `say()` to the first frame played into the room before the message counts as not played (about
70 ms normally, a few seconds on two overloaded cores)."""


NOBODY_LISTENS = (
    "nobody in the room has subscribed to the worker's audio track yet (livekit-agents plays only once somebody "
    "listens: join with a frontend that subscribes to it)"
)


def audio_subscription(session: Any) -> asyncio.Future[None] | None:
    """The room audio output's `subscribed` future (done once somebody subscribed), or None without a room."""
    output = getattr(getattr(session, "output", None), "audio", None)
    while output is not None:  # the transcript synchronizer and others wrap the room's audio output
        subscribed = getattr(output, "subscribed", None)
        if isinstance(subscribed, asyncio.Future):
            return subscribed
        output = getattr(output, "next_in_chain", None)
    return None


def somebody_listens(session: Any) -> bool:
    """Whether audio said now can play (no room output, as in console mode, counts as yes)."""
    subscribed = audio_subscription(session)
    return subscribed is None or (subscribed.done() and not subscribed.cancelled())


async def wait_for_listener(session: Any, within: float) -> bool:
    """Wait up to `within` seconds for somebody to subscribe to the worker's audio; False if nobody did."""
    subscribed = audio_subscription(session)
    if subscribed is None or subscribed.done():
        return somebody_listens(session)
    try:
        await asyncio.wait_for(asyncio.shield(subscribed), within)
    except TimeoutError:
        return False
    return True


def nothing_played_reason(session: Any) -> str:
    """The likeliest reason no audio of the worker reached the room, for the converse error."""
    subscribed = audio_subscription(session)
    if subscribed is not None and not subscribed.done():
        return NOBODY_LISTENS
    if subscribed is not None and subscribed.cancelled():
        return "the room's audio output gave up waiting for a subscriber (its signal was cancelled); restart the worker"
    return "no audio reached the room"
