"""Forward a publisher's Opus RTP payloads to subscribers untouched, as an SFU does.

aiortc's receivers decode what arrives and its senders encode frames, so relaying decoded audio
would put every utterance through a second Opus encoder (and aiortc's jitter buffer) on its way
through the room: room tests and room benchmarks would hear worse audio than a real LiveKit
server delivers. Instead:

- ``OpusForwarder`` takes over one audio ``RTCRtpReceiver``'s RTP handling (``_handle_rtp_packet``,
  the method aiortc's DTLS transport calls for each routed packet) before anything is decoded,
  and hands every Opus payload, with its timestamp extended to 64 bits, to its subscribers.
- ``ForwardedTrack`` is one subscriber's track. It yields ``av.Packet``s, which aiortc's
  ``RTCRtpSender`` sends as they are (its documented pre-encoded path: ``OpusEncoder.pack``),
  with the sender's own SSRC, its own sequence numbers and its own random timestamp origin plus
  the publisher's timestamp offset. So every subscriber gets a well-formed stream of its own and
  the publisher's timing (DTX gaps included) is kept.

Not kept: the publisher's audio-level header extension, sequence gaps of lost packets (the
sender numbers what it sends), and RTCP receiver reports to the publisher.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
from typing import Any

import av
from aiortc import RTCRtpReceiver, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtp import RtpPacket

log = logging.getLogger("lkserver.forwarding")

OPUS_CLOCK_RATE = 48000
OPUS_TIME_BASE = fractions.Fraction(1, OPUS_CLOCK_RATE)
FRAME_TICKS = OPUS_CLOCK_RATE // 50  # 20 ms: where a new SSRC continues after the last packet
# Packets a subscriber may fall behind by before the oldest are dropped: 2 s of 20 ms packets.
SUBSCRIBER_BACKLOG = 100


class ForwardedTrack(MediaStreamTrack):
    """One subscriber's copy of a forwarded track: pre-encoded packets for an ``RTCRtpSender``."""

    kind = "audio"

    def __init__(self, forwarder: OpusForwarder) -> None:
        super().__init__()
        self._forwarder = forwarder
        self._backlog: collections.deque[av.Packet | None] = collections.deque(maxlen=SUBSCRIBER_BACKLOG)
        self._arrived = asyncio.Event()
        self._reading = False  # packets are kept only once the sender reads: before that they are stale

    def push(self, packet: av.Packet | None) -> None:
        """Queue ``packet`` (None: the publisher's stream ended)."""
        if self._reading or packet is None:
            self._backlog.append(packet)
            self._arrived.set()

    async def recv(self) -> av.Packet:  # type: ignore[override]  # aiortc senders take Frame | Packet
        self._reading = True
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            if self._backlog:
                break
            self._arrived.clear()
            await self._arrived.wait()
        packet = self._backlog.popleft()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        super().stop()
        self._forwarder.unsubscribe(self)
        self._arrived.set()  # wake a pending recv(), which then raises


class OpusForwarder:
    """The Opus packets one receiver gets, fanned out to ``ForwardedTrack``s as they arrive."""

    def __init__(self, transceiver: RTCRtpTransceiver, name: str) -> None:
        self.name = name
        self._transceiver = transceiver
        self._subscribers: set[ForwardedTrack] = set()
        self._ssrc: int | None = None
        self._last_timestamp = 0  # the newest RTP timestamp of the current SSRC
        self._last_extended = 0  # ... and where it lies on the forwarded time line
        self._closed = False
        self.packets_forwarded = 0
        take_over_rtp(transceiver.receiver, self._on_rtp)

    def subscribe(self) -> ForwardedTrack:
        track = ForwardedTrack(self)
        if self._closed:
            track.push(None)
        else:
            self._subscribers.add(track)
        return track

    def unsubscribe(self, track: ForwardedTrack) -> None:
        if track in self._subscribers:
            self._subscribers.discard(track)
            log.info("%s: a subscriber left after %d forwarded packets", self.name, self.packets_forwarded)

    def close(self) -> None:
        """The publisher's stream ended: every subscriber's sender stops."""
        self._closed = True
        for track in list(self._subscribers):
            track.push(None)
        self._subscribers.clear()

    def _is_opus(self, payload_type: int) -> bool:
        # The transceiver's negotiated codecs (aiortc keeps them on ``_codecs``; no public accessor).
        return any(
            c.payloadType == payload_type and c.mimeType.lower() == "audio/opus" for c in self._transceiver._codecs
        )

    async def _on_rtp(self, packet: RtpPacket, arrival_time_ms: int) -> None:
        if self._closed or not packet.payload:
            return
        if not self._is_opus(packet.payload_type):
            log.debug("%s: dropping a packet of payload type %d (not Opus)", self.name, packet.payload_type)
            return
        forwarded = av.Packet(packet.payload)
        forwarded.pts = self._extend(packet)
        forwarded.time_base = OPUS_TIME_BASE
        self.packets_forwarded += 1
        for track in self._subscribers:
            track.push(forwarded)

    def _extend(self, packet: RtpPacket) -> int:
        """``packet``'s timestamp on one continuous time line: wraps unrolled, reordering kept, and a new SSRC
        (the publisher restarted its stream) continuing 20 ms after the last packet instead of jumping."""
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self._last_extended += FRAME_TICKS
            self._ssrc = packet.ssrc
            self._last_timestamp = packet.timestamp
            return self._last_extended
        delta = (packet.timestamp - self._last_timestamp + (1 << 31)) % (1 << 32) - (1 << 31)
        extended = self._last_extended + delta
        if delta > 0:
            self._last_timestamp, self._last_extended = packet.timestamp, extended
        return extended


def take_over_rtp(receiver: RTCRtpReceiver, handler: Any) -> None:
    """Route ``receiver``'s RTP packets to ``handler(packet, arrival_time_ms)`` instead of its jitter buffer and
    decoder. aiortc's DTLS transport calls ``receiver._handle_rtp_packet`` for every packet it routes to the
    receiver; an instance attribute of that name is what it finds. Nothing reaches the decoder, so the
    receiver's own track stays empty (and nobody needs to read it)."""
    receiver._handle_rtp_packet = handler  # type: ignore[method-assign]
