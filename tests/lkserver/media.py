"""The server side of a participant's WebRTC transports, on aiortc.

``Transport`` wraps one ``RTCPeerConnection``: it answers the client's offers (the publisher
transport, which in single-peer-connection mode is the only one), or makes offers of its own
(the v0 subscriber transport), and it takes trickled ICE candidates, holding them until the
remote description they belong to is known.

Audio from a publisher is forwarded as it arrived, Opus payloads untouched (``forwarding.py``),
as a real SFU forwards it. Video is decoded by aiortc and fanned out through a ``MediaRelay``,
which the subscribers' senders re-encode.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdatachannel import RTCDataChannel

from .forwarding import OpusForwarder

log = logging.getLogger("lkserver.media")

RELIABLE_LABEL = "_reliable"
LOSSY_LABEL = "_lossy"

# One relay for the whole server: it decodes each published video track once for all subscribers.
relay = MediaRelay()
# The forwarder of each published audio track (the receiver's track), for the subscribers' transports.
forwarders: dict[MediaStreamTrack, OpusForwarder] = {}


@dataclass(frozen=True)
class MediaSection:
    """What the server needs to know about one m-line of a remote description."""

    mid: str
    kind: str
    direction: str
    track_id: str  # the second part of ``a=msid`` (the client's track cid), or ""


def media_sections(sdp: str) -> list[MediaSection]:
    """Parse the m-lines of an SDP (aiortc drops ``a=msid`` without a WMS group, so read it here)."""
    description = aiortc_sdp.SessionDescription.parse(sdp)
    out = []
    for media in description.media:
        if media.kind not in ("audio", "video"):
            continue
        track_id = ""
        if media.msid and " " in media.msid:
            track_id = media.msid.split(" ", 1)[1]
        direction = media.direction or "sendrecv"
        if media.port == 0:
            direction = "inactive"
        out.append(MediaSection(str(media.rtp.muxId), media.kind, direction, track_id))
    return out


def parse_candidate(candidate_init: str) -> aiortc_sdp.RTCIceCandidate | None:
    """A trickled ``{candidate, sdpMid, sdpMLineIndex}`` as an aiortc candidate (None: end/unusable)."""
    init = json.loads(candidate_init)
    line = init.get("candidate") or ""
    if not line:
        return None
    if line.startswith("candidate:"):
        line = line[len("candidate:") :]
    try:
        candidate = aiortc_sdp.candidate_from_sdp(line)
    except (ValueError, IndexError):
        log.debug("ignoring unparsable candidate %r", line)
        return None
    candidate.sdpMid = init.get("sdpMid")
    candidate.sdpMLineIndex = init.get("sdpMLineIndex")
    return candidate


class Transport:
    """One peer connection of a participant, seen from the server."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._pending_candidates: list[aiortc_sdp.RTCIceCandidate] = []
        self._remote_set = False
        self._answer_waiter: asyncio.Future[str] | None = None
        self.negotiation_lock = asyncio.Lock()

        self._forwarders: dict[MediaStreamTrack, OpusForwarder] = {}  # this connection's published audio

        @self.pc.on("connectionstatechange")
        def _on_state() -> None:
            log.debug("%s: connection %s", self.name, self.pc.connectionState)

        # Registered first, so the forwarder exists before anybody else hears of the track.
        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            transceiver = self.transceiver_of(track)
            if track.kind == "audio" and transceiver is not None:
                forwarder = OpusForwarder(transceiver, f"{self.name}/{transceiver.mid}")
                forwarders[track] = self._forwarders[track] = forwarder

    # -- ICE --------------------------------------------------------------------------------

    async def add_candidate(self, candidate_init: str) -> None:
        candidate = parse_candidate(candidate_init)
        if candidate is None:
            return
        if not self._remote_set:
            self._pending_candidates.append(candidate)
            return
        await self._add(candidate)

    async def _add(self, candidate: aiortc_sdp.RTCIceCandidate) -> None:
        try:
            await self.pc.addIceCandidate(candidate)
        except Exception as e:  # an unusable candidate must not end the session
            log.debug("%s: candidate %s refused: %s", self.name, candidate, e)

    async def _remote_description_set(self) -> None:
        self._remote_set = True
        pending, self._pending_candidates = self._pending_candidates, []
        for candidate in pending:
            await self._add(candidate)

    # -- the client offers, we answer (publisher / single PC) --------------------------------

    async def apply_offer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await self._remote_description_set()

    async def create_answer(self) -> str:
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        return self.pc.localDescription.sdp

    # -- we offer, the client answers (v0 subscriber) ----------------------------------------

    async def create_offer(self) -> str:
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        self._answer_waiter = asyncio.get_running_loop().create_future()
        return self.pc.localDescription.sdp

    async def wait_answer(self) -> None:
        assert self._answer_waiter is not None
        sdp = await self._answer_waiter
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        await self._remote_description_set()

    def deliver_answer(self, sdp: str) -> None:
        if self._answer_waiter is not None and not self._answer_waiter.done():
            self._answer_waiter.set_result(sdp)

    # -- data channels and tracks -----------------------------------------------------------

    def create_data_channels(self) -> dict[str, RTCDataChannel]:
        """Open ``_reliable`` and ``_lossy`` from the server side (the v0 subscriber PC does)."""
        return {
            RELIABLE_LABEL: self.pc.createDataChannel(RELIABLE_LABEL, ordered=True),
            LOSSY_LABEL: self.pc.createDataChannel(LOSSY_LABEL, ordered=False, maxRetransmits=0),
        }

    def transceiver_of(self, track: MediaStreamTrack) -> RTCRtpTransceiver | None:
        return next((t for t in self.pc.getTransceivers() if t.receiver.track is track), None)

    def attach(self, transceiver: RTCRtpTransceiver, source: MediaStreamTrack, stream_id: str) -> None:
        """Send ``source`` on ``transceiver`` (audio forwarded, video relayed), announced as
        ``a=msid:<stream_id> ...``."""
        forwarder = forwarders.get(source)
        transceiver.sender.replaceTrack(forwarder.subscribe() if forwarder else relay.subscribe(source, buffered=False))
        # aiortc has no public way to name the stream; LiveKit clients read "PA_x|TR_y" from it.
        transceiver.sender._stream_id = stream_id
        transceiver.direction = "sendonly"

    def add_sending(self, source: MediaStreamTrack, stream_id: str) -> RTCRtpTransceiver:
        """A new sendonly transceiver for ``source``, to announce in the next server offer."""
        transceiver = self.pc.addTransceiver(source.kind, direction="sendonly")
        self.attach(transceiver, source, stream_id)
        return transceiver

    @staticmethod
    def detach(transceiver: RTCRtpTransceiver) -> None:
        """Stop sending on ``transceiver`` for good (a stopped aiortc sender is never restarted)."""
        track = transceiver.sender.track
        transceiver.sender.replaceTrack(None)
        transceiver.direction = "inactive"
        if track is not None:
            track.stop()

    def on(self, event: str, handler: Callable[..., object]) -> None:
        self.pc.on(event, handler)

    async def close(self) -> None:
        for track, forwarder in self._forwarders.items():
            forwarder.close()
            forwarders.pop(track, None)
        self._forwarders.clear()
        await self.pc.close()
