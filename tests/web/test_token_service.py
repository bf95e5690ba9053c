"""The token endpoint of `voice-mcp web`, over real HTTP: codes, sessions, refusals, grants, no secret anywhere."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import jwt
import pytest

from mcp_bridge.access.store import AccessStore

from .service import SECRET, WebService, run_cli

BODY = {"room_name": "some-other-room", "participant_identity": "voice-mcp-bridge", "participant_name": "Phone",
        "participant_metadata": "", "room_config": {"agents": [{"agent_name": "x"}]}, "unknown_field": 1}


async def link(service: WebService, *args: str) -> dict[str, str]:
    code, out, err = await run_cli(service, "link", "--json", *args)
    assert code == 0, err
    return json.loads(out)


async def post(session: aiohttp.ClientSession, service: WebService, code: str | None = None,
               body: object = BODY, **headers: str) -> tuple[int, dict[str, Any], aiohttp.ClientResponse]:
    if code is not None:
        headers["Authorization"] = f"Bearer {code}"
    async with session.post(f"{service.url}/api/token", json=body, headers=headers) as response:
        payload = await response.json()
        assert SECRET not in json.dumps(payload) and SECRET not in str(response.headers)
        assert response.headers["Cache-Control"] == "no-store"
        return response.status, payload, response


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, SECRET, algorithms=["HS256"], options={"verify_aud": False})


async def test_a_code_buys_one_room_only_token_and_a_session_that_refreshes_it(
    web_service: WebService,
) -> None:
    issued = await link(web_service)
    assert issued["url"] == f"{web_service.url}/#code={issued['code']}"
    assert len(issued["code"].replace("-", "")) * 5 >= 64  # base32: 5 bits a character

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        status, body, response = await post(session, web_service, issued["code"])
        assert status == 201, body
        assert body["server_url"] == "ws://127.0.0.1:7880"
        cookie = response.headers.getall("Set-Cookie")
        session_cookie = next(c for c in cookie if c.startswith("voice_mcp_session="))
        assert "httponly" in session_cookie.lower() and "samesite=strict" in session_cookie.lower()

        token = claims(body["participant_token"])
        video = token["video"]
        assert video["room"] == "voice-mcp"  # not the room the request asked for
        assert video["roomJoin"] is True and video["canSubscribe"] is True and video["canPublishData"] is True
        assert video["canPublishSources"] == ["microphone"]
        assert not any(video.get(k) for k in ("roomAdmin", "roomCreate", "roomList", "roomRecord", "agent"))
        assert token["sub"].startswith("user-") and token["sub"] != "voice-mcp-bridge"
        assert token["exp"] - token["nbf"] <= 3600
        assert token["exp"] > time.time()

        # the used code is refused; the session cookie (sent automatically) gets a fresh token for the same device
        status, body, _ = await post(session, web_service, issued["code"])
        assert (status, body["error"]) == (401, "code_used")
        status, body, _ = await post(session, web_service)
        assert status == 201, body
        assert claims(body["participant_token"])["sub"] == token["sub"]

        # a second link on the same device keeps the device's identity
        status, body, _ = await post(session, web_service, (await link(web_service))["code"])
        assert status == 201 and claims(body["participant_token"])["sub"] == token["sub"]

    assert SECRET not in web_service.log.read_text()
    raw = web_service.data_dir.joinpath("access.sqlite3").read_bytes()
    assert issued["code"].encode() not in raw and issued["code"].replace("-", "").encode() not in raw


async def test_missing_wrong_and_expired_codes_are_refused(web_service: WebService) -> None:
    expired = AccessStore.in_data_dir(web_service.data_dir).issue_code(600, now=time.time() - 601)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await post(session, web_service))[:2] == (401, {"error": "code_missing", "message": (
            "send the access code from the join link as Authorization: Bearer")})
        status, body, _ = await post(session, web_service, "AAAA-BBBB-CCCC-DDDD")
        assert (status, body["error"]) == (401, "code_unknown")
        status, body, _ = await post(session, web_service, expired.code)
        assert (status, body["error"]) == (401, "code_expired")
        status, body, _ = await post(session, web_service, body=[1, 2])
        assert status == 400
        forged = {"Cookie": "voice_mcp_session=forged"}
        status, body, _ = await post(session, web_service, **forged)
        assert (status, body["error"]) == (401, "session_ended")


async def test_more_than_ten_failures_a_minute_are_rate_limited(web_service: WebService) -> None:
    good = (await link(web_service))["code"]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        for attempt in range(10):
            status, _, _ = await post(session, web_service, f"WRONG-{attempt:04d}")
            assert status == 401
        status, body, response = await post(session, web_service, good)
        assert (status, body["error"]) == (429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1
    # the refused attempt did not burn the good code
    assert AccessStore.in_data_dir(web_service.data_dir).redeem_code(good) is None


async def test_revoke_all_ends_codes_and_sessions(web_service: WebService) -> None:
    first, second = await link(web_service), await link(web_service)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        assert (await post(session, web_service, first["code"]))[0] == 201
        code, _, err = await run_cli(web_service, "link", "--revoke-all")
        assert code == 0 and "1 unused code(s) and 1 device session(s)" in err
        status, body, _ = await post(session, web_service)
        assert (status, body["error"]) == (401, "session_ended")
        status, body, _ = await post(session, web_service, second["code"])
        assert (status, body["error"]) == (401, "code_unknown")


async def test_link_ttl_is_bounded(web_service: WebService) -> None:
    code, _, err = await run_cli(web_service, "link", "--ttl", "90000")
    assert code == 1 and "[invalid_argument]" in err and "86400" in err
    issued = await link(web_service, "--ttl", "60")
    assert issued["expires_at"].endswith("+00:00")


@pytest.mark.parametrize("path", ["/", "/app.js", "/app.css", "/vendor/livekit-client.umd.js"])
async def test_page_assets_are_served_without_the_secret(web_service: WebService, path: str) -> None:
    async with aiohttp.ClientSession() as session, session.get(web_service.url + path) as response:
        text = await response.text()
        assert response.status == 200, text[:300]
        assert SECRET not in text and SECRET not in str(response.headers)
        if path == "/":
            policy = response.headers["Content-Security-Policy"]
            assert "connect-src 'self' ws://127.0.0.1:7880 http://127.0.0.1:7880" in policy
            assert response.headers["Cache-Control"] == "no-store"
