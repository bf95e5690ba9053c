"""The speaker between exchanges: kept open, playing silence, for a bounded idle time.

An exchange that ends well (or is cancelled) hands its `Player` here instead of closing it; the next exchange within
`VOICE_MCP_DEVICE_IDLE_MS` takes it back and plays at once, without resolving and opening the device again.
The stream keeps running while it is kept: a running stream whose sound server goes away stops calling back, so
`take()` sees it is dead and a fresh one is opened (PortAudio's start on a stopped stream whose server had died
never returned, in tests). The exchange that takes it stops it and starts it again with its first audio queued. The
idle timer closes it otherwise, and `aclose()` always does. Only the speaker is kept: the microphone closes after
every exchange (privacy, and the system's microphone indicator).

Ownership is always single: the exchange owns the player from `take()` (or from opening its own) until it calls
`keep()`; from then on this object does, until the timer or `aclose()` closes it or the next `take()`. A player
that failed, or whose callbacks stopped, is closed instead of kept.
"""

from __future__ import annotations

import asyncio
import logging

from mcp_bridge.cancel_safe import finish

from .player import Player

log = logging.getLogger(__name__)


class KeptSpeaker:
    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        self._player: Player | None = None
        self._timer: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        """Closes of players that could not be reused (a reference until each has finished)."""
        self.expired = asyncio.Event()
        """Set when the idle timer has closed a kept speaker (cleared when one is kept again)."""

    @property
    def holding(self) -> bool:
        return self._player is not None

    def take(self) -> Player | None:
        """The kept player, now owned by the caller, or None (nothing kept, or it expired)."""
        player, self._player = self._player, None
        if player is not None and self._timer is not None:
            self._timer.cancel()  # still asleep: the timer only closes the player it finds here
            self._timer = None
        if player is not None and not player.alive:  # its sound server went away meanwhile, say
            self._close_later(player)
            return None
        return player

    async def keep(self, player: Player) -> None:
        """Take over `player` after its exchange: keep it (running, silent) for `idle_seconds`, or close it."""
        await self._close_kept()  # never two: a second exchange cannot run beside the first, but be sure
        if self.idle_seconds <= 0 or not player.alive:
            log.debug("speaker not kept (idle %.1f s, healthy %s, running %s, last callback %.2f s ago)",
                      self.idle_seconds, player.healthy, player.running, player.since_callback)
            await player.aclose()
            return
        player.idle()
        self._player = player
        self.expired.clear()
        self._timer = asyncio.get_running_loop().create_task(self._expire(player), name="voice-mcp-speaker-idle")

    async def _expire(self, player: Player) -> None:
        await asyncio.sleep(self.idle_seconds)
        if self._player is not player:
            return
        self._player = None
        self._timer = None
        log.debug("speaker idle for %.0f s: closing it", self.idle_seconds)
        await finish(player.aclose())  # to the end: aclose() cancels this task and then relies on the close
        self.expired.set()

    def _close_later(self, player: Player) -> None:
        task = asyncio.get_running_loop().create_task(player.aclose(), name="voice-mcp-speaker-close")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_kept(self) -> None:
        timer, self._timer = self._timer, None
        player, self._player = self._player, None
        if timer is not None:
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
        if player is not None:
            await player.aclose()

    async def aclose(self) -> None:
        """Close the kept speaker now (and wait for closes already under way)."""
        await self._close_kept()
        if self._closing:
            await asyncio.gather(*list(self._closing), return_exceptions=True)
