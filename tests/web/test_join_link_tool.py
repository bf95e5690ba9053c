"""`create_join_link` through the real MCP server (in-memory client): a redeemable one-time code, bounded TTL."""

from __future__ import annotations

import datetime
from pathlib import Path

from mcp import Client

from mcp_bridge.access.store import AccessStore
from mcp_bridge.server import create_server
from tests.speech_fixtures import clean_settings


async def test_create_join_link_returns_a_one_time_code_for_the_page(tmp_path: Path) -> None:
    settings = clean_settings(data_dir=tmp_path, web_url="https://voice.example.net/")
    async with Client(create_server(settings, prewarm=False)) as client:
        result = await client.call_tool("create_join_link", {"ttl_seconds": 120})
        assert not result.is_error, result.content
        link = result.structured_content or {}
        assert link["url"] == f"https://voice.example.net/#code={link['code']}"
        expires = datetime.datetime.fromisoformat(link["expires_at"])
        left = (expires - datetime.datetime.now(datetime.UTC)).total_seconds()
        assert 0 < left <= 120

        too_long = await client.call_tool("create_join_link", {"ttl_seconds": 86401})
        assert too_long.is_error

    store = AccessStore.in_data_dir(tmp_path)
    assert store.redeem_code(link["code"].lower()) is None  # typed in lower case on a phone: still the code
    assert store.redeem_code(link["code"]) == "used"
