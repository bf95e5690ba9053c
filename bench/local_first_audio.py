"""(b) `converse` called → first sound, local loop: the speaker closed after every call vs kept open, interleaved.

`LocalTransport`s on the same private PulseAudio and the same speech providers, one with
`VOICE_MCP_DEVICE_IDLE_MS=0` (the default: the speaker is opened for every call), one with 30 s (kept open between
calls), and, for reference, one that behaves as the local loop did before either change: the speaker opened for
every call and its stream started as soon as it is open, so its buffer is full of silence when the first audio
comes (`_StartedWhenOpened`). Rounds rotate which goes first, so all see the same machine load. Each call is the
product's usual one: the message of `local_loop.MESSAGE`, then listening (no reply: it ends after `LISTEN_SECONDS`).
The first call of each transport is a warm-up and not counted (it opens the speaker in all).

- `first_audio_local_speaker_{started,closed,kept}`: converse called → first loud sample on the speaker monitor.
- `first_audio_local_transport_{started,closed,kept}`: the transport's own `first_audio_ms`.
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


KEPT_IDLE_MS = 30000
"""The kept side's idle time (the setting's default is 0: the speaker closes after every call)."""


async def run_first_audio(speech: Speech, *, rounds: int, out: Path) -> list[Measurement]:
    vad = build_vad(bench_settings())
    sides = ("started", "closed", "kept")
    speaker: dict[str, list[float | None]] = {side: [] for side in sides}
    own: dict[str, list[float | None]] = {side: [] for side in sides}
    loads: list[float] = []
    with VirtualAudioSession(), TemporaryDirectory(prefix="vmcp-bench-first-") as tmp:
        kept_idle = KEPT_IDLE_MS
        transports = {
            "started": LocalTransport(bench_settings(data_dir=Path(tmp), device_idle_ms=0), stt=speech.stt,
                                      tts=speech.tts, vad=vad),
            "closed": LocalTransport(bench_settings(data_dir=Path(tmp), device_idle_ms=0), stt=speech.stt,
                                     tts=speech.tts, vad=vad),
            "kept": LocalTransport(bench_settings(data_dir=Path(tmp), device_idle_ms=kept_idle), stt=speech.stt,
                                   tts=speech.tts, vad=vad),
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
            "closed": "VOICE_MCP_DEVICE_IDLE_MS=0: speaker opened for every call",
            "kept": f"VOICE_MCP_DEVICE_IDLE_MS={kept_idle}: speaker kept open between calls"}
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
