"""The server's Opus forwarding, byte for byte, between aiortc peers (no SDK in the way).

A publisher sends known payloads through the server's forwarder to two subscribers, whose raw RTP
is captured before any decoding: each gets exactly the publisher's payloads, in order, in a stream
of its own (its own SSRC, contiguous sequence numbers, the publisher's timing from its own origin).
"""

from __future__ import annotations

import asyncio
import fractions
import itertools
import re

import av
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

from tests.lkserver.forwarding import OpusForwarder, take_over_rtp

from .helpers import WAIT, eventually

pytestmark = [pytest.mark.livekit, pytest.mark.usefixtures("livekit_network")]

PACKETS = 60
DTX_AT = 40  # the publisher skips 400 ms of timestamps before this packet, as Opus DTX does in a pause
TICKS = 960  # 20 ms at 48 kHz


def payload(i: int) -> bytes:
    return bytes([0x78, i]) + bytes((i * 7 + k) % 256 for k in range(20 + i % 40))


def pts(i: int) -> int:
    return i * TICKS + (20 * TICKS if i >= DTX_AT else 0)


class PacketSource(MediaStreamTrack):
    """Pre-encoded packets, one per 20 ms, once ``go`` is set; then the track ends."""

    kind = "audio"

    def __init__(self, go: asyncio.Event) -> None:
        super().__init__()
        self._go = go
        self._next = 0

    async def recv(self) -> av.Packet:  # type: ignore[override]
        await self._go.wait()
        if self._next == PACKETS:
            self.stop()
            raise MediaStreamError
        await asyncio.sleep(0.02)
        packet = av.Packet(payload(self._next))
        packet.pts, packet.time_base = pts(self._next), fractions.Fraction(1, 48000)
        self._next += 1
        return packet


def peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))  # host candidates only: nothing leaves the namespace


async def connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


async def test_subscribers_get_the_publishers_payloads_in_streams_of_their_own():
    go = asyncio.Event()
    publisher, server_in = peer(), peer()
    peers = [publisher, server_in]
    forwarder: list[OpusForwarder] = []

    @server_in.on("track")
    def _published(track: MediaStreamTrack) -> None:
        transceiver = next(t for t in server_in.getTransceivers() if t.receiver.track is track)
        forwarder.append(OpusForwarder(transceiver, "test"))

    publisher.addTrack(PacketSource(go))
    try:
        await connect(publisher, server_in)
        (ssrc_published,) = map(int, re.findall(r"a=ssrc:(\d+) cname", publisher.localDescription.sdp))
        captured: list[list[RtpPacket]] = []
        forwarded = []
        for _ in range(2):
            server_out, subscriber = peer(), peer()
            peers += [server_out, subscriber]
            received: list[RtpPacket] = []
            captured.append(received)

            async def capture(packet: RtpPacket, arrival_time_ms: int, received: list[RtpPacket] = received) -> None:
                received.append(packet)

            subscriber.on("track", lambda track, sub=subscriber, cap=capture: take_over_rtp(sub.getReceivers()[0], cap))
            transceiver = server_out.addTransceiver("audio", direction="sendonly")
            track = forwarder[0].subscribe()
            forwarded.append(track)
            transceiver.sender.replaceTrack(track)
            await connect(server_out, subscriber)
        await eventually(lambda: all(p.connectionState == "connected" for p in peers))
        go.set()
        await eventually(lambda: all(r and r[-1].payload == payload(PACKETS - 1) for r in captured))
    finally:
        for pc in peers:
            await pc.close()

    ssrcs = set()
    for received in captured:
        first = next(i for i in range(PACKETS) if payload(i) == received[0].payload)
        assert first < DTX_AT, "the subscriber missed the start of the stream"
        assert [p.payload for p in received] == [payload(i) for i in range(first, PACKETS)]
        (ssrc,) = {p.ssrc for p in received}
        ssrcs.add(ssrc)
        assert all((b.sequence_number - a.sequence_number) % 65536 == 1 for a, b in itertools.pairwise(received))
        origin = received[0].timestamp - pts(first)
        assert [(p.timestamp - origin) % 2**32 for p in received] == [pts(i) for i in range(first, PACKETS)]
    assert len(ssrcs) == 2 and ssrc_published not in ssrcs
    # The publisher's stream ended with its connection: the forwarder ends every subscriber's track.
    forwarder[0].close()
    await eventually(lambda: all(t.readyState == "ended" for t in forwarded), within=WAIT)
