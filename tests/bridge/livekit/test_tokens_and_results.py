"""Unit tests of the bridge's LiveKit pieces that need no server: tokens, backoff, result mapping."""

from __future__ import annotations

import datetime
import itertools
import time

from livekit import api

from agent.protocol import ConverseOk, Utterance, WireTimings
from mcp_bridge.livekit.link import backoff_delays
from mcp_bridge.livekit.tokens import TokenSource
from tests.speech_fixtures import clean_settings


def source(ttl_s: float) -> TokenSource:
    return TokenSource(
        api_key="key", api_secret="s" * 40, room="voice-mcp", identity="voice-mcp-bridge",
        ttl=datetime.timedelta(seconds=ttl_s),
    )


def test_the_token_joins_only_the_configured_room_as_the_bridge() -> None:
    token = source(3600).current()
    claims = api.TokenVerifier("key", "s" * 40).verify(token.jwt)
    assert claims.identity == "voice-mcp-bridge"
    assert claims.video.room == "voice-mcp" and claims.video.room_join
    assert claims.attributes == {"voice-mcp.role": "bridge"}
    assert token.expires_at > time.time() + 3000


def test_the_token_is_reused_while_fresh_and_reminted_before_it_expires() -> None:
    tokens = source(3600)
    first = tokens.current()
    assert tokens.current() is first and tokens.minted == 1
    tokens._token = type(first)(jwt=first.jwt, expires_at=time.time() + 60)  # 1/60 of its life left
    again = tokens.current()
    assert again is not first and tokens.minted == 2 and again.expires_at > time.time() + 3000


def test_reconnect_backoff_doubles_up_to_a_cap() -> None:
    assert list(itertools.islice(backoff_delays(0.5, 30.0), 9)) == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]


def test_results_put_earlier_turns_first_and_keep_typed_fields() -> None:
    from mcp_bridge.livekit import LiveKitTransport

    settings = clean_settings(livekit_url="ws://127.0.0.1:1", livekit_api_key="k", livekit_api_secret="s" * 40)
    transport = LiveKitTransport(settings)
    answer = ConverseOk(
        id="x",
        earlier=[Utterance(text="first thing"), Utterance(text="second thing")],
        reply=Utterance(text="the answer"),
        heard_speech=True,
        ended_by="queued",
        timings=WireTimings(first_audio_ms=400.0, speak_ms=1000.0),
        tts_provider="piper",
    )
    result = transport._result(answer)
    assert result.text.splitlines() == ["first thing", "second thing", "the answer"]
    assert result.earlier == ["first thing", "second thing"]
    assert result.transport == "livekit" and result.ended_by == "queued"
    assert result.timings.first_audio_ms == 400.0 and result.tts_provider == "piper"
