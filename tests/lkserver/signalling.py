"""The participant signalling websocket: ``/rtc/v1`` (single peer connection), ``/rtc`` and validate.

A ``Session`` is one connected participant. It sends the ``JoinResponse`` first, then runs the
offer/answer/trickle exchange for its transports, answers pings, turns ``add_track`` into
``track_published``, applies metadata updates, and is the ``ParticipantLink`` through which its
room sends it signals, data packets and subscribed tracks.

Modes (chosen by the client, see livekit-api ``signal_client``):

* v1, ``/rtc/v1?join_request=...``: one peer connection. The client's offer comes with the join
  request; the server only ever answers. To send a new track down, the server asks for a
  receiving m-line with ``media_sections_requirement``, the client re-offers, and the answer
  names the track of each m-line in ``mid_to_track_id``. Data goes down the client's own
  ``_reliable``/``_lossy`` channels.
* v0, ``/rtc?...``: a publisher connection (client offers) and a subscriber connection (the
  server offers, ``subscriber_primary``), on which the server opens ``_reliable``/``_lossy``
  for data and adds the tracks it forwards, stream id ``PA_<publisher>|TR_<track>``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web
from aiortc import RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel
from livekit.protocol import models, rtc

from .auth import AuthError, Credentials, KeyStore, require_join
from .media import LOSSY_LABEL, RELIABLE_LABEL, MediaSection, Transport, media_sections
from .rooms import Participant, PublishedTrack, Room, RoomManager, new_sid

log = logging.getLogger("lkserver.signalling")

SERVER_VERSION = "1.9.0"  # the SDK needs >= 1.8.0 (or nothing) for RPC
PROTOCOL_VERSION = 16
PING_INTERVAL = 5  # seconds
PING_TIMEOUT = 30  # seconds; generous, this server runs on busy CI machines
NEGOTIATION_TIMEOUT = 15.0
RENEGOTIATION_WAIT = 5.0  # seconds a v1 client gets to send the offer the server asked for before the next request

SERVER_INFO = models.ServerInfo(
    edition=models.ServerInfo.Edition.Standard,
    version=SERVER_VERSION,
    protocol=PROTOCOL_VERSION,
    node_id="lkserver",
)

_KINDS = {
    "agent": models.ParticipantInfo.Kind.AGENT,
    "sip": models.ParticipantInfo.Kind.SIP,
    "egress": models.ParticipantInfo.Kind.EGRESS,
    "ingress": models.ParticipantInfo.Kind.INGRESS,
}
_LABEL_KIND = {RELIABLE_LABEL: models.DataPacket.Kind.RELIABLE, LOSSY_LABEL: models.DataPacket.Kind.LOSSY}
_KIND_LABEL = {kind: label for label, kind in _LABEL_KIND.items()}


@dataclass
class JoinParams:
    """What the client says about itself when it connects."""

    single_pc: bool
    client_info: models.ClientInfo = field(default_factory=models.ClientInfo)
    auto_subscribe: bool = True
    publisher_offer: rtc.SessionDescription | None = None


def parse_join(request: web.Request, single_pc: bool) -> JoinParams:
    """Read the join parameters: a (gzipped) WrappedJoinRequest on v1, query parameters on v0."""
    q = request.query
    if not single_pc:
        info = models.ClientInfo(
            version=q.get("version", ""),
            protocol=int(q.get("protocol", "0") or 0),
            os=q.get("os", ""),
            client_protocol=int(q.get("client_protocol", "0") or 0),
        )
        return JoinParams(False, info, auto_subscribe=q.get("auto_subscribe", "1") not in ("0", "false"))
    encoded = q.get("join_request", "")
    if not encoded:
        raise AuthError("join_request is required", status=400)
    try:
        wrapped = rtc.WrappedJoinRequest.FromString(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
        raw = wrapped.join_request
        if wrapped.compression == rtc.WrappedJoinRequest.Compression.GZIP:
            raw = gzip.decompress(raw)
        join = rtc.JoinRequest.FromString(raw)
    except Exception as e:
        raise AuthError(f"cannot decode join request: {e}", status=400) from None
    offer = join.publisher_offer if join.HasField("publisher_offer") else None
    return JoinParams(True, join.client_info, join.connection_settings.auto_subscribe, offer)


def participant_info(creds: Credentials, client: models.ClientInfo, legacy: bool) -> models.ParticipantInfo:
    claims, video = creds.claims, creds.video
    now = time.time()
    return models.ParticipantInfo(
        sid=new_sid("PA_"),
        identity=claims.identity,
        name=claims.name,
        metadata=claims.metadata,
        attributes=dict(claims.attributes or {}),
        state=models.ParticipantInfo.State.ACTIVE,
        joined_at=int(now),
        joined_at_ms=int(now * 1000),
        kind=_KINDS.get(claims.kind, models.ParticipantInfo.Kind.STANDARD),
        client_protocol=0 if legacy else client.client_protocol,
        permission=models.ParticipantPermission(
            can_subscribe=video.can_subscribe,
            can_publish=video.can_publish,
            can_publish_data=video.can_publish_data,
            hidden=bool(video.hidden),
            recorder=bool(video.recorder),
            can_update_metadata=bool(video.can_update_own_metadata),
            agent=bool(video.agent),
            can_subscribe_metrics=bool(video.can_subscribe_metrics),
        ),
    )


class Session:
    """One participant's signalling connection and transports; the room's link to it."""

    def __init__(
        self, ws: web.WebSocketResponse, room: Room, creds: Credentials, params: JoinParams, *, legacy: bool
    ) -> None:
        self.ws = ws
        self.room = room
        self.single_pc = params.single_pc
        info = participant_info(creds, params.client_info, legacy)
        self.participant = Participant(info, self, params.auto_subscribe)
        name = f"{creds.claims.identity}@{room.name}"
        self.publisher = Transport(f"{name}/publisher")
        self.subscriber = None if self.single_pc else Transport(f"{name}/subscriber")
        self._initial_offer = params.publisher_offer
        # v1: the signals that make the client re-offer (track_published, media_sections_requirement), one at a
        # time; see `_renegotiate`. Until the join's own offer is answered, that offer is the one awaited.
        self._renegotiations: list[_Renegotiation] = []
        self._awaited: _Renegotiation | None = None
        self._awaited_timer: asyncio.TimerHandle | None = None
        if self.single_pc and params.publisher_offer is not None:
            self._awaited = _Renegotiation("the join's offer", None, lambda: True)
        self._outbox: asyncio.Queue[rtc.SignalResponse | None] = asyncio.Queue()
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # data channels to send on, and what waits for them to open
        self._data_out: dict[str, RTCDataChannel] = {}
        self._data_backlog: dict[str, list[bytes]] = {RELIABLE_LABEL: [], LOSSY_LABEL: []}
        # publishing: add_track requests waiting for their media, and the last offer's m-lines
        self._pending_publications: dict[str, models.TrackInfo] = {}
        self._offer_sections: dict[str, MediaSection] = {}
        # subscribing: forwarded tracks by track sid, and (v1) those waiting for an m-line
        self._downstream: dict[str, RTCRtpTransceiver] = {}
        self._awaiting_section: list[PublishedTrack] = []
        self._used_mids: set[str] = set()
        self._mid_to_track: dict[str, str] = {}
        self._subscriber_dirty = asyncio.Event()
        self.publisher.on("datachannel", self._on_client_datachannel)
        self.publisher.on("track", self._on_remote_track)

    # -- lifecycle --------------------------------------------------------------------------

    async def run(self) -> None:
        writer = asyncio.create_task(self._write_loop())
        try:
            self.send_signal(
                rtc.SignalResponse(
                    join=rtc.JoinResponse(
                        room=self.room.to_proto(),
                        participant=self.participant.snapshot(),
                        other_participants=self.room.visible_others(self.participant),
                        server_version=SERVER_VERSION,
                        server_info=SERVER_INFO,
                        subscriber_primary=not self.single_pc,
                        ping_interval=PING_INTERVAL,
                        ping_timeout=PING_TIMEOUT,
                    )
                )
            )
            await self.room.add(self.participant)
            if self.subscriber is not None:
                self._data_out = self.subscriber.create_data_channels()
                for channel in self._data_out.values():
                    channel.on("open", self._flush_data)
                self._spawn(self._negotiate_subscriber())
                self._subscriber_dirty.set()
            elif self._initial_offer is not None:
                await self._on_offer(self._initial_offer)
            await self._read_loop()
        finally:
            await self.room.remove(self.participant, models.DisconnectReason.CLIENT_INITIATED)
            await self._shutdown()
            await writer

    async def disconnect(self, reason: models.DisconnectReason.ValueType) -> None:
        """Called by the room when the participant is removed: say why, then hang up."""
        if self._closed.is_set():
            return
        if reason != models.DisconnectReason.CLIENT_INITIATED:
            self.send_signal(
                rtc.SignalResponse(leave=rtc.LeaveRequest(reason=reason, action=rtc.LeaveRequest.Action.DISCONNECT))
            )
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._outbox.put_nowait(None)
        if self._awaited_timer is not None:
            self._awaited_timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await self.publisher.close()
        if self.subscriber is not None:
            await self.subscriber.close()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: task failed", self.participant.identity, exc_info=task.exception())

    # -- websocket --------------------------------------------------------------------------

    def send_signal(self, msg: rtc.SignalResponse) -> None:
        if not self._closed.is_set():
            self._outbox.put_nowait(msg)

    async def _write_loop(self) -> None:
        while (msg := await self._outbox.get()) is not None:
            try:
                await self.ws.send_bytes(msg.SerializeToString())
            except (ConnectionError, RuntimeError):
                break
        with contextlib.suppress(Exception):
            await self.ws.close()

    async def _read_loop(self) -> None:
        async for msg in self.ws:
            if msg.type != WSMsgType.BINARY:
                continue
            request = rtc.SignalRequest.FromString(msg.data)
            which = request.WhichOneof("message")
            try:
                if which == "leave":
                    return
                await self._handle(which, request)
            except Exception:
                log.exception("%s: failed to handle %s", self.participant.identity, which)

    async def _handle(self, which: str | None, req: rtc.SignalRequest) -> None:
        if which == "ping_req":
            now_ms = int(time.time() * 1000)
            self.send_signal(
                rtc.SignalResponse(pong_resp=rtc.Pong(last_ping_timestamp=req.ping_req.timestamp, timestamp=now_ms))
            )
        elif which == "ping":
            self.send_signal(rtc.SignalResponse(pong=int(time.time() * 1000)))
        elif which == "offer":
            await self._on_offer(req.offer)
        elif which == "answer":
            if self.subscriber is not None:
                self.subscriber.deliver_answer(req.answer.sdp)
        elif which == "trickle":
            await self._on_trickle(req.trickle)
        elif which == "add_track":
            self._on_add_track(req.add_track)
        elif which == "mute":
            self._on_mute(req.mute)
        elif which == "update_metadata":
            self._on_update_metadata(req.update_metadata)
        elif which == "subscription":
            self._on_subscription(req.subscription)
        # track_setting, sync_state, update_layers, simulate...: nothing to do here

    def _on_subscription(self, update: rtc.UpdateSubscription) -> None:
        """A client subscribing by hand (it joined with auto_subscribe off) or unsubscribing."""
        wanted = set(update.track_sids)
        for participant_tracks in update.participant_tracks:
            wanted.update(participant_tracks.track_sids)
        if not self.participant.info.permission.can_subscribe and update.subscribe:
            return
        for other in self.room.others(self.participant):
            for sid, track in list(other.tracks.items()):
                if sid not in wanted:
                    continue
                if update.subscribe:
                    self.room.subscribe(self.participant, track)
                else:
                    self.unsubscribe(track)

    # -- negotiation ------------------------------------------------------------------------

    async def _on_trickle(self, trickle: rtc.TrickleRequest) -> None:
        transport = self.publisher
        if trickle.target == rtc.SignalTarget.SUBSCRIBER and self.subscriber is not None:
            transport = self.subscriber
        await transport.add_candidate(trickle.candidateInit)

    async def _on_offer(self, offer: rtc.SessionDescription) -> None:
        """The client's (publisher / single PC) offer: note its m-lines, attach tracks, answer."""
        async with self.publisher.negotiation_lock:
            sections = media_sections(offer.sdp)
            self._offer_sections = {s.mid: s for s in sections}
            log.info(
                "%s: offer %d, m-lines %s",
                self.participant.identity,
                offer.id,
                " ".join(f"{s.mid}:{s.kind}:{s.direction}:{s.track_id or '-'}" for s in sections) or "none",
            )
            await self.publisher.apply_offer(offer.sdp)
            self._drop_unpublished_tracks()
            if self.single_pc:
                self._attach_awaiting_tracks()
            sdp = await self.publisher.create_answer()
            answer = rtc.SessionDescription(type="answer", sdp=sdp, id=offer.id)
            if self.single_pc:
                answer.mid_to_track_id.update(self._mid_to_track)
            self.send_signal(rtc.SignalResponse(answer=answer))
            if self.single_pc:
                self._on_client_offered()

    async def _negotiate_subscriber(self) -> None:
        """v0: offer the subscriber connection whenever what it carries changed."""
        assert self.subscriber is not None
        while True:
            await self._subscriber_dirty.wait()
            self._subscriber_dirty.clear()
            async with self.subscriber.negotiation_lock:
                sdp = await self.subscriber.create_offer()
                self.send_signal(rtc.SignalResponse(offer=rtc.SessionDescription(type="offer", sdp=sdp)))
                try:
                    async with asyncio.timeout(NEGOTIATION_TIMEOUT):
                        await self.subscriber.wait_answer()
                except TimeoutError:
                    log.warning("%s: no answer to the subscriber offer", self.participant.identity)

    # -- data -------------------------------------------------------------------------------

    def _on_client_datachannel(self, channel: RTCDataChannel) -> None:
        kind = _LABEL_KIND.get(channel.label)
        if kind is None:
            return  # e.g. _data_track: not forwarded by this server

        @channel.on("message")
        def _on_message(data: bytes | str) -> None:
            if isinstance(data, str) or not self.participant.info.permission.can_publish_data:
                return
            try:
                packet = models.DataPacket.FromString(data)
            except Exception:
                log.warning("%s: undecodable data packet", self.participant.identity)
                return
            self.room.forward_data(self.participant, kind, packet)

        if self.single_pc:  # v1: the client's own channels carry data both ways
            self._data_out[channel.label] = channel
            channel.on("open", self._flush_data)
            self._flush_data()

    def send_data(self, kind: models.DataPacket.Kind.ValueType, payload: bytes) -> None:
        label = _KIND_LABEL.get(kind, RELIABLE_LABEL)
        self._data_backlog[label].append(payload)
        self._flush_data()

    def _flush_data(self) -> None:
        for label, backlog in self._data_backlog.items():
            channel = self._data_out.get(label)
            if channel is None or channel.readyState != "open":
                continue
            while backlog:
                channel.send(backlog.pop(0))

    # -- publishing -------------------------------------------------------------------------

    def _on_add_track(self, req: rtc.AddTrackRequest) -> None:
        perm = self.participant.info.permission
        if not perm.can_publish:
            log.warning("%s: may not publish", self.participant.identity)
            return
        info = models.TrackInfo(
            sid=new_sid("TR_"),
            type=req.type,
            name=req.name,
            muted=req.muted,
            source=req.source,
            disable_dtx=req.disable_dtx,
            stereo=req.stereo,
            stream=req.stream,
            mime_type="audio/opus" if req.type == models.TrackType.AUDIO else "video/vp8",
        )
        self._pending_publications[req.cid] = info
        log.info("%s: add_track %s cid %s -> %s", self.participant.identity, _kind_name(req.type), req.cid, info.sid)
        published = rtc.SignalResponse(track_published=rtc.TrackPublishedResponse(cid=req.cid, track=info))
        if not self.single_pc:
            self.send_signal(published)
            return
        cid = req.cid
        self._renegotiate(
            _Renegotiation(f"the offer of {info.sid}", published, lambda: cid not in self._pending_publications)
        )

    def _on_remote_track(self, media: MediaStreamTrack) -> None:
        transceiver = self.publisher.transceiver_of(media)
        mid = transceiver.mid if transceiver is not None else None
        section = self._offer_sections.get(mid or "")
        info = self._pending_publications.pop(section.track_id, None) if section else None
        if info is None:  # no msid we know: take the oldest request of that kind
            cid = next((c for c, i in self._pending_publications.items() if _kind_name(i.type) == media.kind), None)
            info = self._pending_publications.pop(cid) if cid is not None else None
        if info is None or mid is None:
            log.info(
                "%s: %s m-line %s carries media but matches no add_track (pending: %s)",
                self.participant.identity,
                media.kind,
                mid,
                ", ".join(self._pending_publications) or "none",
            )
            return
        info.mid = mid
        log.info("%s: media of %s arrived on m-line %s", self.participant.identity, info.sid, mid)
        self.room.publish(PublishedTrack(info=info, publisher=self.participant, media=media))

    def _drop_unpublished_tracks(self) -> None:
        """A published m-line that stopped sending means the track was unpublished."""
        for track in list(self.participant.tracks.values()):
            section = self._offer_sections.get(track.info.mid)
            if section is None or section.direction not in ("sendonly", "sendrecv"):
                self.room.unpublish(track)

    def _on_mute(self, req: rtc.MuteTrackRequest) -> None:
        track = self.participant.tracks.get(req.sid)
        if track is not None:
            track.info.muted = req.muted
            self.room.broadcast_participant(self.participant)

    def _on_update_metadata(self, req: rtc.UpdateParticipantMetadata) -> None:
        info = self.participant.info
        if not info.permission.can_update_metadata:
            reason = rtc.RequestResponse.Reason.NOT_ALLOWED
        else:
            reason = rtc.RequestResponse.Reason.OK
            info.metadata = req.metadata
            info.name = req.name
            for key, value in req.attributes.items():
                if value:
                    info.attributes[key] = value
                else:
                    info.attributes.pop(key, None)
        self.send_signal(
            rtc.SignalResponse(request_response=rtc.RequestResponse(request_id=req.request_id, reason=reason))
        )
        if reason == rtc.RequestResponse.Reason.OK:
            self.room.broadcast_participant(self.participant)

    # -- subscribing ------------------------------------------------------------------------

    def subscribe(self, track: PublishedTrack) -> None:
        if track.media is None or track.info.sid in self._downstream:
            return
        if self.subscriber is not None:
            stream_id = f"{track.publisher.sid}|{track.info.sid}"
            self._downstream[track.info.sid] = self.subscriber.add_sending(track.media, stream_id)
            self._subscriber_dirty.set()
        else:
            self._awaiting_section.append(track)
            audio = track.info.type == models.TrackType.AUDIO
            requirement = rtc.SignalResponse(
                media_sections_requirement=rtc.MediaSectionsRequirement(
                    num_audios=1 if audio else 0, num_videos=0 if audio else 1
                )
            )
            self._renegotiate(
                _Renegotiation(
                    f"an m-line for {track.info.sid}", requirement, lambda: track not in self._awaiting_section
                )
            )

    # -- v1 renegotiation: one request at a time ---------------------------------------------

    def _renegotiate(self, request: _Renegotiation) -> None:
        """Make a v1 client re-offer, once the offer for the previous request has arrived.

        Both ``track_published`` (the client then adds its sender and offers) and ``media_sections_requirement``
        (it adds receiving m-lines and offers) start a client renegotiation. Two at once lose one with the livekit
        Rust SDK (rtc 1.1.x): its publisher offer is debounced, and a renegotiation asked for while the debounced
        offer is being created is dropped, so an agent that starts publishing as the server asks it for an m-line
        never offers its track, is never told it was subscribed, and plays nothing. Sent one after the other,
        every request reaches an idle client. (livekit-server asks only for the m-lines its client's offers lack,
        see sendUnmatchedMediaRequirement; this server still asks for one per track it subscribes after the join.)"""
        self._renegotiations.append(request)
        self._next_renegotiation()

    def _next_renegotiation(self) -> None:
        while self._awaited is None and self._renegotiations:
            request = self._renegotiations.pop(0)
            if request.satisfied():  # e.g. the track went on a free m-line of an offer in between
                continue
            assert request.signal is not None
            if request.signal.WhichOneof("message") == "media_sections_requirement":
                log.info("%s: asking for %s", self.participant.identity, request.what)
            self.send_signal(request.signal)
            self._await(request)

    def _await(self, request: _Renegotiation) -> None:
        self._awaited = request
        if self._awaited_timer is not None:
            self._awaited_timer.cancel()
        self._awaited_timer = asyncio.get_running_loop().call_later(RENEGOTIATION_WAIT, self._awaited_too_long, request)

    def _awaited_too_long(self, request: _Renegotiation) -> None:
        if self._awaited is request and not self._closed.is_set():
            log.warning("%s: no offer with %s after %g s", self.participant.identity, request.what, RENEGOTIATION_WAIT)
            self._awaited = None
            self._next_renegotiation()

    def _on_client_offered(self) -> None:
        """After answering a v1 offer: if it was the one awaited, send the next request."""
        if self._awaited is not None and self._awaited.satisfied():
            self._awaited = None
            if self._awaited_timer is not None:
                self._awaited_timer.cancel()
                self._awaited_timer = None
        self._next_renegotiation()

    def _attach_awaiting_tracks(self) -> None:
        """v1: put waiting tracks on unused receive-only m-lines of the client's latest offer."""
        transceivers = {t.mid: t for t in self.publisher.pc.getTransceivers() if t.mid is not None}
        still_waiting = []
        for track in self._awaiting_section:
            assert track.media is not None
            free = next(
                (
                    s
                    for s in self._offer_sections.values()
                    if s.kind == track.media.kind
                    and s.direction == "recvonly"
                    and s.mid not in self._used_mids
                    and s.mid in transceivers
                ),
                None,
            )
            if free is None:
                still_waiting.append(track)
                continue
            transceiver = transceivers[free.mid]
            self.publisher.attach(transceiver, track.media, f"{track.publisher.sid}|{track.info.sid}")
            self._used_mids.add(free.mid)
            self._mid_to_track[free.mid] = track.info.sid
            self._downstream[track.info.sid] = transceiver
            log.info("%s: receives %s on m-line %s", self.participant.identity, track.info.sid, free.mid)
        self._awaiting_section = still_waiting

    def unsubscribe(self, track: PublishedTrack) -> None:
        self._awaiting_section = [t for t in self._awaiting_section if t is not track]
        transceiver = self._downstream.pop(track.info.sid, None)
        if transceiver is None:
            return
        Transport.detach(transceiver)
        if self.subscriber is not None:
            self._subscriber_dirty.set()


@dataclass
class _Renegotiation:
    """A signal that makes a v1 client re-offer, and how to tell that the offer it asked for has been answered."""

    what: str
    signal: rtc.SignalResponse | None
    satisfied: Callable[[], bool]


def _kind_name(track_type: models.TrackType.ValueType) -> str:
    return "audio" if track_type == models.TrackType.AUDIO else "video"


class SignallingService:
    """The HTTP endpoints of participant signalling."""

    def __init__(
        self, keys: KeyStore, rooms: RoomManager, *, single_pc: bool = True, legacy_protocol: bool = False
    ) -> None:
        self.keys = keys
        self.rooms = rooms
        self.single_pc = single_pc  # False: answer 404 on /rtc/v1, as a server without it would
        # True: announce every participant with client_protocol 0, so that SDKs talk to each
        # other with the legacy data packets (RPC v1: rpc_request/rpc_ack/rpc_response).
        self.legacy_protocol = legacy_protocol
        self.sessions: set[Session] = set()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/rtc", self.rtc_v0),
            web.get("/rtc/v1", self.rtc_v1),
            web.get("/rtc/validate", self.validate_v0),
            web.get("/rtc/v1/validate", self.validate_v1),
        ]

    def _check(self, request: web.Request, single_pc: bool) -> tuple[Credentials, JoinParams, str]:
        creds = self.keys.from_request(request)
        room = require_join(creds, request.query.get("room", ""))
        return creds, parse_join(request, single_pc), room

    async def validate_v0(self, request: web.Request) -> web.Response:
        return self._validate(request, single_pc=False)

    async def validate_v1(self, request: web.Request) -> web.Response:
        if not self.single_pc:
            raise web.HTTPNotFound()
        return self._validate(request, single_pc=True)

    def _validate(self, request: web.Request, single_pc: bool) -> web.Response:
        try:
            self._check(request, single_pc)
        except AuthError as e:
            return web.Response(status=e.status, text=str(e))
        return web.Response(text="success")

    async def rtc_v0(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, single_pc=False)

    async def rtc_v1(self, request: web.Request) -> web.StreamResponse:
        if not self.single_pc:
            raise web.HTTPNotFound()
        return await self._serve(request, single_pc=True)

    async def _serve(self, request: web.Request, single_pc: bool) -> web.StreamResponse:
        try:
            creds, params, room_name = self._check(request, single_pc)
        except AuthError as e:
            log.info("join refused: %s", e)
            return web.Response(status=e.status, text=str(e))
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        room = await self.rooms.get_or_create(room_name, creds.claims.room_config)
        session = Session(ws, room, creds, params, legacy=self.legacy_protocol)
        log.info("%s joined %s (%s)", creds.claims.identity, room_name, "single PC" if single_pc else "two PCs")
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            log.info("%s left %s", creds.claims.identity, room_name)
        return ws
