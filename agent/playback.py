"""Why a message the worker was asked to speak did not play, and how long to wait for its first audio.

livekit-agents' room audio output holds every frame until somebody in the room has subscribed to the worker's
audio track. A frontend that has not subscribed yet (or a server that never says so) therefore makes `say()`
wait silently; the converse call must say that, soon, instead of reporting a message as spoken after a long
silence or as a bare timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

FIRST_AUDIO_WITHIN = 20.0
"""Seconds from `say()` to the first frame played into the room before the message counts as not played (about
70 ms normally, a few seconds on two overloaded cores)."""


def nothing_played_reason(session: Any) -> str:
    """The likeliest reason no audio of the worker reached the room, for the converse error."""
    output = getattr(getattr(session, "output", None), "audio", None)
    while output is not None:  # the transcript synchronizer and others wrap the room's audio output
        subscribed = getattr(output, "subscribed", None)
        if isinstance(subscribed, asyncio.Future):
            if not subscribed.done():
                return (
                    "nobody in the room has subscribed to the worker's audio track yet "
                    "(livekit-agents plays only once somebody listens)"
                )
            break
        output = getattr(output, "next_in_chain", None)
    return "no audio reached the room"
