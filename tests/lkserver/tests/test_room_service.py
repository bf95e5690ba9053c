"""RoomService over Twirp (livekit-api's client) reflecting, and acting on, what is in the rooms."""

from __future__ import annotations

import aiohttp
import pytest
from livekit import api, rtc

from tests.lkserver.fixtures import LiveKitServerProcess

from .helpers import Events, eventually

pytestmark = [pytest.mark.livekit, pytest.mark.usefixtures("livekit_network")]


async def room_names(lk: api.LiveKitAPI) -> set[str]:
    return {r.name for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms}


async def test_rooms_and_participants_are_listed(livekit_server, livekit_connect, livekit_room_name):
    async with livekit_server.api() as lk:
        created = await lk.room.create_room(api.CreateRoomRequest(name=livekit_room_name, metadata="m0"))
        assert created.sid.startswith("RM_")
        assert livekit_room_name in await room_names(lk)

        alice = await livekit_connect(livekit_server, "alice", livekit_room_name, name="Alice")
        await livekit_connect(livekit_server, "bob", livekit_room_name, hidden=True)
        listed = await lk.room.list_participants(api.ListParticipantsRequest(room=livekit_room_name))
        assert {(p.identity, p.name) for p in listed.participants} == {("alice", "Alice"), ("bob", "")}
        (room,) = (await lk.room.list_rooms(api.ListRoomsRequest(names=[livekit_room_name]))).rooms
        assert (room.sid, room.metadata, room.num_participants) == (created.sid, "m0", 1)  # bob is hidden
        assert alice.metadata == "m0"
        assert "bob" not in alice.remote_participants


async def test_metadata_updates_reach_the_clients(livekit_server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(livekit_server, "alice", livekit_room_name)
    bob = await livekit_connect(livekit_server, "bob", livekit_room_name)
    room_meta = Events(bob, "room_metadata_changed")
    participant_meta = Events(bob, "participant_metadata_changed")
    attributes = Events(alice, "participant_attributes_changed")
    await eventually(lambda: "alice" in bob.remote_participants)

    async with livekit_server.api() as lk:
        await lk.room.update_room_metadata(api.UpdateRoomMetadataRequest(room=livekit_room_name, metadata="r1"))
        old, new = await room_meta.next()
        assert (old, new) == ("", "r1")

        info = await lk.room.update_participant(
            api.UpdateParticipantRequest(
                room=livekit_room_name, identity="alice", metadata="p1", attributes={"team": "blue"}
            )
        )
        assert (info.metadata, dict(info.attributes)) == ("p1", {"team": "blue"})
        participant, _old, new = await participant_meta.next()
        assert (participant.identity, new) == ("alice", "p1")
        changed, participant = await attributes.next()  # alice hears about herself
        assert (changed, participant.identity) == ({"team": "blue"}, "alice")


async def test_send_data_reaches_the_chosen_participants(livekit_server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(livekit_server, "alice", livekit_room_name)
    bob = await livekit_connect(livekit_server, "bob", livekit_room_name)
    at_alice, at_bob = Events(alice, "data_received"), Events(bob, "data_received")

    async with livekit_server.api() as lk:
        await lk.room.send_data(
            api.SendDataRequest(
                room=livekit_room_name,
                data=b"for bob",
                kind=api.DataPacket.Kind.RELIABLE,
                destination_identities=["bob"],
                topic="news",
            )
        )
        await lk.room.send_data(api.SendDataRequest(room=livekit_room_name, data=b"for all", topic="news"))
    (packet,) = await at_bob.next()
    assert (packet.data, packet.topic, packet.participant) == (b"for bob", "news", None)
    (packet,) = await at_bob.next()
    assert packet.data == b"for all"
    (packet,) = await at_alice.next()
    assert packet.data == b"for all"
    assert at_alice.pending() == 0


async def test_remove_participant_and_delete_room(livekit_server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(livekit_server, "alice", livekit_room_name)
    bob = await livekit_connect(livekit_server, "bob", livekit_room_name)
    alice_gone, bob_gone = Events(alice, "disconnected"), Events(bob, "disconnected")
    left = Events(alice, "participant_disconnected")
    await eventually(lambda: "bob" in alice.remote_participants)

    async with livekit_server.api() as lk:
        await lk.room.remove_participant(api.RoomParticipantIdentity(room=livekit_room_name, identity="bob"))
        assert await bob_gone.next() == (rtc.DisconnectReason.PARTICIPANT_REMOVED,)
        (participant,) = await left.next()
        assert participant.identity == "bob"

        await lk.room.delete_room(api.DeleteRoomRequest(room=livekit_room_name))
        assert await alice_gone.next() == (rtc.DisconnectReason.ROOM_DELETED,)
        assert livekit_room_name not in await room_names(lk)

        with pytest.raises(api.TwirpError) as missing:
            await lk.room.delete_room(api.DeleteRoomRequest(room=livekit_room_name))
        assert (missing.value.status, missing.value.code) == (404, "not_found")


async def test_empty_and_departure_timeouts_close_rooms(livekit_server, livekit_connect, livekit_room_name):
    never_joined, joined_and_left = f"{livekit_room_name}-e", f"{livekit_room_name}-d"
    async with livekit_server.api() as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=never_joined, empty_timeout=1))
        await lk.room.create_room(api.CreateRoomRequest(name=joined_and_left, empty_timeout=600, departure_timeout=1))
        visitor = await livekit_connect(livekit_server, "visitor", joined_and_left)
        await eventually(lambda: _absent(lk, never_joined))
        assert joined_and_left in await room_names(lk)  # occupied: no timeout applies
        await visitor.disconnect()
        await eventually(lambda: _absent(lk, joined_and_left))


async def _absent(lk: api.LiveKitAPI, name: str) -> bool:
    return name not in await room_names(lk)


async def test_api_grants_are_checked(livekit_server: LiveKitServerProcess, livekit_room_name):
    """A room_admin token for another room may neither list this room's participants nor list rooms."""
    other_room_admin = (
        api.AccessToken(livekit_server.api_key, livekit_server.api_secret)
        .with_grants(api.VideoGrants(room_admin=True, room="some-other-room"))
        .to_jwt()
    )
    async with livekit_server.api() as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=livekit_room_name))
    calls = [
        ("ListParticipants", api.ListParticipantsRequest(room=livekit_room_name)),
        ("ListRooms", api.ListRoomsRequest()),
    ]
    headers = {"Authorization": f"Bearer {other_room_admin}", "Content-Type": "application/protobuf"}
    async with aiohttp.ClientSession() as http:
        for method, request in calls:
            url = f"{livekit_server.http_url}/twirp/livekit.RoomService/{method}"
            async with http.post(url, data=request.SerializeToString(), headers=headers) as res:
                assert res.status == 401
                assert (await res.json())["code"] == "unauthenticated"
