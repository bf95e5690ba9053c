"""Joining, leaving, participant updates, data packets and token checks, with the real SDK.

Every exchange runs in both signalling modes: single peer connection (``/rtc/v1``, the SDK's
default) and the fallback to ``/rtc`` with two peer connections, which the SDK takes when the
server answers 404 on ``/rtc/v1``.
"""

from __future__ import annotations

import asyncio
import datetime

import aiohttp
import pytest
from livekit import api, rtc

from tests.lkserver.fixtures import LiveKitServerProcess

from .helpers import Events, eventually

pytestmark = [pytest.mark.livekit, pytest.mark.usefixtures("livekit_network")]


@pytest.fixture(params=["v1", "fallback"])
def server(
    request: pytest.FixtureRequest,
    livekit_server: LiveKitServerProcess,
    livekit_server_no_v1: LiveKitServerProcess,
) -> LiveKitServerProcess:
    return livekit_server if request.param == "v1" else livekit_server_no_v1


def joined_mode(server: LiveKitServerProcess, identity: str, room: str) -> str:
    """How the server says ``identity`` joined ``room``: "single PC" or "two PCs"."""
    for line in server.log_path.read_text().splitlines():
        if f" {identity} joined {room} (" in line:
            return line.rsplit("(", 1)[1].rstrip(")")
    return ""


async def test_two_participants_see_each_other_in_the_expected_mode(server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(server, "alice", livekit_room_name, name="Alice", metadata="a-meta")
    joined = Events(alice, "participant_connected")
    bob = await livekit_connect(server, "bob", livekit_room_name, attributes={"role": "listener"})

    (seen,) = await joined.next()
    assert seen.identity == "bob"
    assert seen.attributes == {"role": "listener"}
    assert seen.sid.startswith("PA_")
    other = bob.remote_participants["alice"]
    assert (other.name, other.metadata) == ("Alice", "a-meta")
    assert bob.name == alice.name == livekit_room_name
    expected = "single PC" if server.extra_args == () else "two PCs"
    assert joined_mode(server, "alice", livekit_room_name) == expected
    assert joined_mode(server, "bob", livekit_room_name) == expected


async def test_data_packets_reach_only_their_destinations(server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(server, "alice", livekit_room_name)
    bob = await livekit_connect(server, "bob", livekit_room_name)
    carol = await livekit_connect(server, "carol", livekit_room_name)
    at_bob, at_carol, at_alice = (Events(r, "data_received") for r in (bob, carol, alice))
    await eventually(lambda: len(alice.remote_participants) == 2)

    await alice.local_participant.publish_data(b"to everybody", reliable=True, topic="all")
    await alice.local_participant.publish_data(b"to bob only", reliable=True, destination_identities=["bob"])
    await bob.local_participant.publish_data(b"reply", reliable=True, topic="back")

    for events in (at_bob, at_carol):
        (packet,) = await events.next()
        assert (packet.data, packet.topic, packet.participant.identity) == (b"to everybody", "all", "alice")
        assert packet.kind == rtc.DataPacketKind.KIND_RELIABLE
    (packet,) = await at_bob.next()
    assert packet.data == b"to bob only"
    (packet,) = await at_alice.first(lambda p: p.participant.identity == "bob")
    assert (packet.data, packet.topic) == (b"reply", "back")
    # carol got nothing more: the reply went to alice and carol, the direct message to bob only
    (packet,) = await at_carol.next()
    assert packet.data == b"reply"
    assert at_carol.pending() == 0


async def test_lossy_data_is_forwarded(server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(server, "alice", livekit_room_name)
    bob = await livekit_connect(server, "bob", livekit_room_name)
    at_bob = Events(bob, "data_received")
    await eventually(lambda: "bob" in alice.remote_participants)

    # lossy may drop a packet: send until one arrives (bounded)
    async def send_and_check() -> bool:
        await alice.local_participant.publish_data(b"lossy", reliable=False)
        return at_bob.pending() > 0

    await eventually(send_and_check, interval=0.2)
    (packet,) = await at_bob.next()
    assert (packet.data, packet.kind) == (b"lossy", rtc.DataPacketKind.KIND_LOSSY)


async def test_text_and_byte_streams_arrive_whole(server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(server, "alice", livekit_room_name)
    bob = await livekit_connect(server, "bob", livekit_room_name)
    texts: list[str] = []
    blobs: list[bytes] = []

    async def read_text(reader: rtc.TextStreamReader) -> None:
        texts.append(await reader.read_all())

    async def read_bytes(reader: rtc.ByteStreamReader) -> None:
        blobs.append(b"".join([chunk async for chunk in reader]))

    bob.register_text_stream_handler("chat", lambda r, who: asyncio.ensure_future(read_text(r)))
    bob.register_byte_stream_handler("blob", lambda r, who: asyncio.ensure_future(read_bytes(r)))
    await eventually(lambda: "bob" in alice.remote_participants)

    long_text = "hello " * 5000  # several chunks
    payload = bytes(range(256)) * 200
    await alice.local_participant.send_text(long_text, topic="chat")
    writer = await alice.local_participant.stream_bytes("blob.bin", topic="blob")
    await writer.write(payload)
    await writer.aclose()

    await eventually(lambda: texts and blobs)
    assert texts == [long_text]
    assert blobs == [payload]


async def test_only_an_agent_may_send_a_text_stream_on_behalf_of_another(
    server, livekit_connect, livekit_room_name
):
    """livekit-server's rule: an agent publishes a user's transcript under the user's identity; anybody else's
    packets carry the sender's own identity, and only agents' legacy transcriptions pass."""
    alice = await livekit_connect(server, "alice", livekit_room_name)
    agent = await livekit_connect(server, "agent-1", livekit_room_name, kind="agent")
    mallory = await livekit_connect(server, "mallory", livekit_room_name)
    received: list[tuple[str, str]] = []  # (sender as the handler is told, text)
    legacy: list[str] = []

    async def read(reader: rtc.TextStreamReader, sender: str) -> None:
        received.append((sender, await reader.read_all()))

    alice.register_text_stream_handler("lk.transcription", lambda r, who: asyncio.ensure_future(read(r, who)))
    alice.on("transcription_received", lambda segments, *_: legacy.extend(s.text for s in segments))
    await eventually(lambda: {"agent-1", "mallory"} <= set(alice.remote_participants))

    for sender, text in ((agent, "from the agent"), (mallory, "from mallory")):
        writer = await sender.local_participant.stream_text(topic="lk.transcription", sender_identity="alice")
        await writer.write(text)
        await writer.aclose()
        transcription = rtc.Transcription(
            participant_identity="alice",
            track_sid="TR_none",
            segments=[
                rtc.TranscriptionSegment(id="SG_1", text=text, start_time=0, end_time=0, final=True, language="")
            ],
        )
        await sender.local_participant.publish_transcription(transcription)

    await eventually(lambda: len(received) == 2)
    assert sorted(received) == [("alice", "from the agent"), ("mallory", "from mallory")]
    await eventually(lambda: legacy)
    await asyncio.sleep(0.5)  # mallory's packet, sent after the agent's, would have arrived by now
    assert legacy == ["from the agent"]


async def test_attribute_and_metadata_changes_are_announced(server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(server, "alice", livekit_room_name, can_update_own_metadata=True)
    bob = await livekit_connect(server, "bob", livekit_room_name)
    attributes = Events(bob, "participant_attributes_changed")
    metadata = Events(bob, "participant_metadata_changed")
    await eventually(lambda: "bob" in alice.remote_participants)

    await alice.local_participant.set_attributes({"mood": "curious"})
    changed, participant = await attributes.next()
    assert (changed, participant.identity) == ({"mood": "curious"}, "alice")
    await alice.local_participant.set_metadata("new metadata")
    participant, old, new = await metadata.next()
    assert (participant.identity, old, new) == ("alice", "", "new metadata")

    # without the grant the server refuses (the Python SDK does not raise): nothing changes
    await bob.local_participant.set_metadata("not mine to set")
    async with server.api() as lk:
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=livekit_room_name))
    by_identity = {p.identity: p for p in listed.participants}
    assert by_identity["bob"].metadata == ""
    assert by_identity["alice"].metadata == "new metadata"
    assert dict(by_identity["alice"].attributes) == {"mood": "curious"}


async def test_leaving_is_announced(server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(server, "alice", livekit_room_name)
    bob = await livekit_connect(server, "bob", livekit_room_name)
    left = Events(alice, "participant_disconnected")
    await eventually(lambda: "bob" in alice.remote_participants)

    await bob.disconnect()
    (participant,) = await left.next()
    assert participant.identity == "bob"
    assert "bob" not in alice.remote_participants


async def test_same_identity_replaces_the_first_connection(livekit_server, livekit_connect, livekit_room_name):
    first = await livekit_connect(livekit_server, "alice", livekit_room_name)
    gone = Events(first, "disconnected")
    await livekit_connect(livekit_server, "alice", livekit_room_name)
    (reason,) = await gone.next()
    assert reason == rtc.DisconnectReason.DUPLICATE_IDENTITY


@pytest.mark.parametrize(
    "bad_token",
    ["wrong_signature", "expired", "no_join_grant", "unknown_key"],
)
async def test_bad_tokens_are_refused(livekit_server, livekit_room_name, bad_token):
    s = livekit_server
    token = {
        "wrong_signature": lambda: s.token("eve", livekit_room_name, api_secret="not-the-secret-" * 3),
        "expired": lambda: s.token("eve", livekit_room_name, ttl=datetime.timedelta(minutes=-10)),
        "no_join_grant": lambda: s.token("eve", livekit_room_name, room_join=False),
        "unknown_key": lambda: _token_with_key(s, "otherkey", livekit_room_name),
    }[bad_token]()
    room = rtc.Room()
    with pytest.raises(rtc.ConnectError) as refused:
        await room.connect(s.url, token)
    assert "401" in refused.value.message
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {token}"}
        async with http.get(f"{s.http_url}/rtc/v1/validate", headers=headers) as res:
            assert res.status == 401
        good = {"Authorization": f"Bearer {s.token('eve', livekit_room_name)}"}
        async with http.get(f"{s.http_url}/rtc/validate", headers=good) as res:
            assert (res.status, await res.text()) == (200, "success")
    async with s.api() as lk:
        rooms = await lk.room.list_rooms(api.ListRoomsRequest(names=[livekit_room_name]))
        assert list(rooms.rooms) == []  # a refused join creates no room


def _token_with_key(server: LiveKitServerProcess, key: str, room: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room)
    return api.AccessToken(key, server.api_secret).with_identity("eve").with_grants(grants).to_jwt()


async def test_browsers_on_another_origin_may_read_validate_and_call_twirp(livekit_server, livekit_room_name):
    """Like livekit-server: any origin, any request header; tokens, not origins, guard the API."""
    s = livekit_server
    origin = "http://10.213.7.2:8780"
    token = s.token("eve", livekit_room_name)
    async with aiohttp.ClientSession() as http:
        for path in ("/rtc/validate", "/rtc/v1/validate"):
            preflight = {
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            }
            async with http.options(f"{s.http_url}{path}", headers=preflight) as res:
                assert res.status == 204
                assert res.headers["Access-Control-Allow-Origin"] == origin
                assert res.headers["Access-Control-Allow-Methods"] == "GET"
                assert res.headers["Access-Control-Allow-Headers"].lower() == "authorization"
                assert "Origin" in res.headers["Vary"]
            headers = {"Origin": origin, "Authorization": "Bearer not-a-token"}
            async with http.get(f"{s.http_url}{path}", headers=headers) as res:
                assert res.status == 401
                assert res.headers["Access-Control-Allow-Origin"] == origin  # errors are readable too
                assert "Origin" in res.headers["Vary"]
        headers = {"Origin": origin, "Authorization": f"Bearer {token}"}
        async with http.get(f"{s.http_url}/rtc/validate?room={livekit_room_name}", headers=headers) as res:
            assert (res.status, await res.text()) == (200, "success")
            assert res.headers["Access-Control-Allow-Origin"] == origin
        twirp = f"{s.http_url}/twirp/livekit.RoomService/ListRooms"
        preflight = {
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        async with http.options(twirp, headers=preflight) as res:
            assert (res.status, res.headers["Access-Control-Allow-Methods"]) == (204, "POST")
            assert res.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
        admin = s.token("admin", "", room_list=True, room_join=False)
        headers = {"Origin": origin, "Authorization": f"Bearer {admin}", "Content-Type": "application/json"}
        async with http.post(twirp, headers=headers, data="{}") as res:
            assert res.status == 200
            assert res.headers["Access-Control-Allow-Origin"] == origin
        refused = {**preflight, "Access-Control-Request-Method": "DELETE"}
        async with http.options(twirp, headers=refused) as res:
            assert "Access-Control-Allow-Origin" not in res.headers
        async with http.get(f"{s.http_url}/rtc/validate") as res:  # no Origin: not a browser, no CORS
            assert "Access-Control-Allow-Origin" not in res.headers
