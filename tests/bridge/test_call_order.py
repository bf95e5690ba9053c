"""Calls run one at a time: a second call says it is waiting and waits at most VOICE_MCP_BUSY_WAIT; a call the
client cancels is logged as `cancelled`. Through the real MCP server (in-memory client) and `VoiceService`, with the
stand-in local transport (no audio needed for what is tested here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from mcp import Client

from mcp_bridge.exchange_log import read_entries
from mcp_bridge.server import create_server
from tests.speech_fixtures import clean_settings

from .stand_in import StandInService

BOUND = 30.0


class Progress:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.waiting = asyncio.Event()

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.messages.append(message or "")
        if (message or "").startswith("waiting"):
            self.waiting.set()


async def test_a_second_call_says_it_waits_and_fails_busy_after_the_bound(tmp_path: Path) -> None:
    settings = clean_settings(data_dir=tmp_path, busy_wait=0.5)
    service = StandInService(settings)
    service.stand_in.gate = asyncio.Event()
    async with Client(create_server(settings, service, prewarm=False)) as client:
        first = asyncio.create_task(client.call_tool("converse", {"message": "A long story."}))
        await asyncio.wait_for(service.stand_in.entered.wait(), BOUND)
        progress = Progress()
        second = await asyncio.wait_for(
            client.call_tool("converse", {"message": "Me too."}, progress_callback=progress), BOUND
        )
        assert second.is_error
        text = second.content[0].text
        assert text.startswith("[busy] ") and "VOICE_MCP_BUSY_WAIT" in text, text
        assert progress.messages and progress.messages[0].startswith("waiting: waiting for the previous call")

        service.stand_in.gate.set()
        assert not (await asyncio.wait_for(first, BOUND)).is_error
        third = await asyncio.wait_for(client.call_tool("converse", {"message": "Now?"}), BOUND)
        assert not third.is_error, third.content
    codes = [e["error"]["code"] if not e["ok"] else "ok" for e in read_entries(tmp_path / "exchanges.jsonl")]
    assert codes == ["busy", "ok", "ok"]


async def test_a_second_call_within_the_bound_runs_after_the_first(tmp_path: Path) -> None:
    settings = clean_settings(data_dir=tmp_path, busy_wait=60)
    service = StandInService(settings)
    service.stand_in.gate = asyncio.Event()
    async with Client(create_server(settings, service, prewarm=False)) as client:
        first = asyncio.create_task(client.call_tool("converse", {"message": "First."}))
        await asyncio.wait_for(service.stand_in.entered.wait(), BOUND)
        progress = Progress()
        second = asyncio.create_task(client.call_tool("converse", {"message": "Second."}, progress_callback=progress))
        await asyncio.wait_for(progress.waiting.wait(), BOUND)
        service.stand_in.gate.set()
        results = await asyncio.wait_for(asyncio.gather(first, second), BOUND)
    assert not any(r.is_error for r in results)
    assert [r.message for r in service.stand_in.requests] == ["First.", "Second."]


async def test_a_cancelled_call_is_logged_as_cancelled(tmp_path: Path) -> None:
    settings = clean_settings(data_dir=tmp_path)
    service = StandInService(settings)
    service.stand_in.gate = asyncio.Event()  # never set: the call runs until cancelled
    async with Client(create_server(settings, service, prewarm=False)) as client:
        call = asyncio.create_task(client.call_tool("converse", {"message": "Hold on."}))
        await asyncio.wait_for(service.stand_in.entered.wait(), BOUND)
        call.cancel()
        service.stand_in.entered.clear()
        service.stand_in.gate = None
        log = tmp_path / "exchanges.jsonl"
        # the next call runs (the lock was released) and is logged after the cancelled one
        after = await asyncio.wait_for(client.call_tool("converse", {"message": "Again."}), BOUND)
        assert not after.is_error, after.content
    entries = read_entries(log)
    assert [e["error"]["code"] if not e["ok"] else "ok" for e in entries] == ["cancelled", "ok"], entries
