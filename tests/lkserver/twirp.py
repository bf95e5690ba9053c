"""Twirp services: ``livekit.RoomService`` and ``livekit.AgentDispatchService``.

``POST /twirp/livekit.<Service>/<Method>`` with a protobuf (or JSON) body and a bearer token;
errors are Twirp's JSON ``{"code", "msg"}``, which livekit-api turns into ``TwirpError``.
Grants are checked as livekit-server checks them: ``room_create`` to create or delete rooms,
``room_list`` to list them, ``room_admin`` for the named room for everything else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import agent_dispatch, models
from livekit.protocol import room as room_pb

from . import auth
from .agents import AgentService
from .auth import AuthError, Credentials, KeyStore
from .rooms import Participant, Room, RoomManager, new_sid

log = logging.getLogger("lkserver.twirp")


class TwirpError(Exception):
    def __init__(self, code: str, msg: str, status: int) -> None:
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def not_found(msg: str) -> TwirpError:
    return TwirpError("not_found", msg, 404)


Handler = Callable[[Credentials, Message], Awaitable[Message]]


@dataclass(frozen=True)
class Method:
    request: type[Message]
    handler: Handler


class TwirpService:
    def __init__(self, keys: KeyStore, rooms: RoomManager, agents: AgentService) -> None:
        self.keys = keys
        self.rooms = rooms
        self.agents = agents
        self.methods: dict[str, Method] = {
            "livekit.RoomService/CreateRoom": Method(room_pb.CreateRoomRequest, self.create_room),
            "livekit.RoomService/ListRooms": Method(room_pb.ListRoomsRequest, self.list_rooms),
            "livekit.RoomService/DeleteRoom": Method(room_pb.DeleteRoomRequest, self.delete_room),
            "livekit.RoomService/ListParticipants": Method(room_pb.ListParticipantsRequest, self.list_participants),
            "livekit.RoomService/GetParticipant": Method(room_pb.RoomParticipantIdentity, self.get_participant),
            "livekit.RoomService/RemoveParticipant": Method(room_pb.RoomParticipantIdentity, self.remove_participant),
            "livekit.RoomService/UpdateRoomMetadata": Method(
                room_pb.UpdateRoomMetadataRequest, self.update_room_metadata
            ),
            "livekit.RoomService/UpdateParticipant": Method(room_pb.UpdateParticipantRequest, self.update_participant),
            "livekit.RoomService/SendData": Method(room_pb.SendDataRequest, self.send_data),
            "livekit.AgentDispatchService/CreateDispatch": Method(
                agent_dispatch.CreateAgentDispatchRequest, self.create_dispatch
            ),
            "livekit.AgentDispatchService/ListDispatch": Method(
                agent_dispatch.ListAgentDispatchRequest, self.list_dispatch
            ),
            "livekit.AgentDispatchService/DeleteDispatch": Method(
                agent_dispatch.DeleteAgentDispatchRequest, self.delete_dispatch
            ),
        }

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/twirp/{service}/{method}", self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        name = f"{request.match_info['service']}/{request.match_info['method']}"
        method = self.methods.get(name)
        if method is None:
            return _error(TwirpError("bad_route", f"no handler for {name}", 404))
        is_json = request.content_type == "application/json"
        try:
            creds = self.keys.from_request(request)
            body = await request.read()
            req = method.request()
            try:
                if is_json:
                    json_format.Parse(body.decode() or "{}", req)
                else:
                    req.ParseFromString(body)
            except (DecodeError, json_format.ParseError) as e:
                raise TwirpError("malformed", str(e), 400) from None
            res = await method.handler(creds, req)
        except AuthError as e:
            return _error(TwirpError("unauthenticated", str(e), 401))
        except TwirpError as e:
            return _error(e)
        if is_json:
            return web.json_response(json_format.MessageToDict(res))
        return web.Response(body=res.SerializeToString(), content_type="application/protobuf")

    def _room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            raise not_found(f"room {name!r} does not exist")
        return room

    @staticmethod
    def _participant(room: Room, identity: str) -> Participant:
        participant = room.participants.get(identity)
        if participant is None:
            raise not_found(f"participant {identity!r} is not in room {room.name!r}")
        return participant

    # -- RoomService ------------------------------------------------------------------------

    async def create_room(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, room_pb.CreateRoomRequest)
        auth.require_create(creds)
        config = room_pb.RoomConfiguration(
            name=req.name,
            empty_timeout=req.empty_timeout,
            departure_timeout=req.departure_timeout,
            max_participants=req.max_participants,
            metadata=req.metadata,
            agents=req.agents,
        )
        room = await self.rooms.get_or_create(req.name, config)
        return room.to_proto()

    async def list_rooms(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, room_pb.ListRoomsRequest)
        auth.require_list(creds)
        names = set(req.names)
        rooms = [r.to_proto() for r in self.rooms.rooms.values() if not names or r.name in names]
        return room_pb.ListRoomsResponse(rooms=rooms)

    async def delete_room(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, room_pb.DeleteRoomRequest)
        auth.require_create(creds)
        await self.rooms.close(self._room(req.room), models.DisconnectReason.ROOM_DELETED)
        return room_pb.DeleteRoomResponse()

    async def list_participants(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, room_pb.ListParticipantsRequest)
        auth.require_admin(creds, req.room)
        room = self._room(req.room)
        return room_pb.ListParticipantsResponse(participants=[p.snapshot() for p in room.participants.values()])

    async def get_participant(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, room_pb.RoomParticipantIdentity)
        auth.require_admin(creds, req.room)
        room = self._room(req.room)
        participant = self._participant(room, req.identity)
        return participant.snapshot()

    async def remove_participant(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, room_pb.RoomParticipantIdentity)
        auth.require_admin(creds, req.room)
        room = self._room(req.room)
        participant = self._participant(room, req.identity)
        await room.remove(participant, models.DisconnectReason.PARTICIPANT_REMOVED)
        return room_pb.RemoveParticipantResponse()

    async def update_room_metadata(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, room_pb.UpdateRoomMetadataRequest)
        auth.require_admin(creds, req.room)
        room = self._room(req.room)
        room.proto.metadata = req.metadata
        room.broadcast_room()
        return room.to_proto()

    async def update_participant(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, room_pb.UpdateParticipantRequest)
        auth.require_admin(creds, req.room)
        room = self._room(req.room)
        participant = self._participant(room, req.identity)
        info = participant.info
        if req.metadata:
            info.metadata = req.metadata
        if req.name:
            info.name = req.name
        if req.HasField("permission"):
            info.permission.CopyFrom(req.permission)
        for key, value in req.attributes.items():
            if value:
                info.attributes[key] = value
            else:
                info.attributes.pop(key, None)
        room.broadcast_participant(participant)
        return participant.snapshot()

    async def send_data(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, room_pb.SendDataRequest)
        auth.require_admin(creds, req.room)
        room = self._room(req.room)
        identities = list(req.destination_identities)
        identities += [p.identity for p in room.participants.values() if p.sid in req.destination_sids]
        packet = models.DataPacket(
            kind=req.kind,
            destination_identities=identities,
            user=models.UserPacket(payload=req.data, topic=req.topic, nonce=req.nonce),
        )
        if (req.destination_identities or req.destination_sids) and not identities:
            return room_pb.SendDataResponse()  # nobody of those is here
        room.forward_data(None, req.kind, packet)
        return room_pb.SendDataResponse()

    # -- AgentDispatchService ---------------------------------------------------------------

    async def create_dispatch(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, agent_dispatch.CreateAgentDispatchRequest)
        auth.require_admin(creds, req.room)
        room = await self.rooms.get_or_create(req.room)
        dispatch = room.add_dispatch(
            agent_dispatch.AgentDispatch(
                id=new_sid("AD_"),
                agent_name=req.agent_name,
                room=req.room,
                metadata=req.metadata,
                attributes=dict(req.attributes),
            )
        )
        self.agents.launch(room, dispatch)
        return dispatch

    async def list_dispatch(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, agent_dispatch.ListAgentDispatchRequest)
        auth.require_admin(creds, req.room)
        room = self._room(req.room)
        found = [d for d in room.dispatches.values() if not req.dispatch_id or d.id == req.dispatch_id]
        return agent_dispatch.ListAgentDispatchResponse(agent_dispatches=found)

    async def delete_dispatch(self, creds: Credentials, req: Message) -> Message:
        assert isinstance(req, agent_dispatch.DeleteAgentDispatchRequest)
        auth.require_admin(creds, req.room)
        room = self._room(req.room)
        dispatch = room.dispatches.pop(req.dispatch_id, None)
        if dispatch is None:
            raise not_found(f"dispatch {req.dispatch_id!r} does not exist")
        await self.agents.terminate(dispatch)
        dispatch.state.deleted_at = time.time_ns()
        return dispatch


def _error(e: TwirpError) -> web.Response:
    return web.json_response({"code": e.code, "msg": e.msg}, status=e.status)
