"""(b) `converse` called → first sound, local loop: stream started with its first audio queued vs before, interleaved.

Two `LocalTransport`s on the same private PulseAudio and the same speech providers: the local loop as it is (`closed`:
the speaker is opened for every call and its stream starts once the first audio is queued), and, for reference, one
that behaves as the local loop did before: its stream started as soon as it is open, so its buffer is full of
silence when the first audio comes (`started`, `_StartedWhenOpened`). Rounds rotate which goes first, so both see
the same machine load. Each call is the
product's usual one: the message of `local_loop.MESSAGE`, then listening (no reply: it ends after `LISTEN_SECONDS`).
The first call of each transport is a warm-up and not counted (it opens the speaker in all).

- `first_audio_local_speaker_{started,closed}`: converse called → first loud sample on the speaker monitor.
- `first_audio_local_transport_{started,closed}`: the transport's own `first_audio_ms`.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from tempfile import TemporaryDirectory

from agent.speech import build_vad
from mcp_bridge.converse_types import ConverseRequest, ListenOptions, Stage
from mcp_bridge.local import LocalTransport
from mcp_bridge.local import transport as local_transport
from mcp_bridge.local.player import Player

from .harness import Measurement
from .local_loop import MESSAGE
from .settings import bench_settings
from .speech import Speech
from .virtual_audio import Tap, VirtualAudioSession

LISTEN_SECONDS = 1.0
QUIET_BEFORE = 0.6
"""Seconds of quiet before each call, so that no earlier sound is taken for its first one."""
BOUND = 120.0


class _StartedWhenOpened(Player):
    """The speaker as it was before: the stream runs from the moment it is open."""

    start_when_opened = True

    async def start(self) -> None:
        await super().start()
        self._running = True


async def _no_progress(stage: Stage, message: str) -> None:
    return None


async def _call(
    transports: dict[str, LocalTransport], tap: Tap, side: str
) -> tuple[float | None, float | None]:
    for each in transports.values():  # every previous call's "done" cue has played: the tap hears only this call
        await each.settle()
    await asyncio.sleep(QUIET_BEFORE)  # and has reached the monitor (it lags what PortAudio reports)
    transport = transports[side]
    # the calls run one after the other, so the transport module's Player can be swapped for the "started" side
    local_transport.Player = _StartedWhenOpened if side == "started" else Player  # type: ignore[misc]
    tap.clear()
    request = ConverseRequest(message=MESSAGE, listen=ListenOptions(max_seconds=LISTEN_SECONDS, min_seconds=0))
    called = time.perf_counter()
    result = await asyncio.wait_for(transport.converse(request, _no_progress), BOUND)
    heard = tap.first_loud(called)
    return ((heard - called) * 1000 if heard is not None else None), result.timings.first_audio_ms


async def run_first_audio(speech: Speech, *, rounds: int, out: Path) -> list[Measurement]:
    vad = build_vad(bench_settings())
    sides = ("started", "closed")
    speaker: dict[str, list[float | None]] = {side: [] for side in sides}
    own: dict[str, list[float | None]] = {side: [] for side in sides}
    loads: list[float] = []
    with VirtualAudioSession(), TemporaryDirectory(prefix="vmcp-bench-first-") as tmp:
        transports = {
            "started": LocalTransport(bench_settings(data_dir=Path(tmp)), stt=speech.stt, tts=speech.tts, vad=vad),
            "closed": LocalTransport(bench_settings(data_dir=Path(tmp)), stt=speech.stt, tts=speech.tts, vad=vad),
        }
        tap = Tap("vspeaker.monitor").start()
        try:
            await asyncio.sleep(1.0)
            for side in sides:
                await _call(transports, tap, side)  # warm-up: all open the speaker here
            for n in range(rounds):
                order = sides[n % len(sides):] + sides[:n % len(sides)]
                for side in order:
                    heard, first = await _call(transports, tap, side)
                    speaker[side].append(heard)
                    own[side].append(first)
                loads.append(os.getloadavg()[0])
        finally:
            tap.stop()
            for transport in transports.values():
                await transport.aclose()
    rows: list[Measurement] = []
    what = {"started": "before: speaker opened for every call, its stream started as soon as it is open",
            "closed": "now: speaker opened for every call, its stream started with the first audio queued"}
    for side in sides:
        rows.append(Measurement.of(
            f"first_audio_local_speaker_{side}", "ms", speaker[side],
            f"(b) converse called → first loud sample on the virtual speaker; {what[side]}; interleaved A/B",
            chart=True, load_average=loads,
        ))
        rows.append(Measurement.of(
            f"first_audio_local_transport_{side}", "ms", own[side],
            f"(b) the transport's first_audio_ms; {what[side]}",
        ))
    return rows
