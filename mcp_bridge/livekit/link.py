"""The bridge's one long-lived connection to its LiveKit room, with reconnects and exponential backoff.

`RoomLink` owns the `rtc.Room`: the first `ensure_connected` joins; when the SDK gives the connection up
(its own resume failed) a background task re-joins with a fresh token, waiting 0.5 s, 1 s, 2 s … up to 30 s
between attempts. Progress packets and streamed response bodies are routed to whoever waits for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from livekit import rtc

from agent.participants import is_worker
from agent.protocol import (
    ATTR_REQUEST_ID,
    PROTOCOL_VERSION,
    TOPIC_PROGRESS,
    TOPIC_RESPONSE,
    TOPIC_TURN,
    Progress,
    TurnNotice,
    Utterance,
)
from agent.stream_inbox import StreamInbox
from mcp_bridge.converse_types import TransportUnavailable

from .tokens import TokenSource

logger = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0

_NO_AUTOMATIC_REJOIN = {
    rtc.DisconnectReason.DUPLICATE_IDENTITY,
    rtc.DisconnectReason.PARTICIPANT_REMOVED,
    rtc.DisconnectReason.CLIENT_INITIATED,
}

ProgressListener = Callable[[Progress], None]
ParticipantListener = Callable[[rtc.RemoteParticipant], None]
TurnListener = Callable[[str, Utterance], None]
"""Called with the worker's identity and the turn it announced."""
TrafficListener = Callable[[str], None]
"""Called with the identity of whoever sent a data packet or a transcript."""


def backoff_delays(start: float = BACKOFF_START, cap: float = BACKOFF_MAX) -> Iterator[float]:
    delay = start
    while True:
        yield delay
        delay = min(delay * 2, cap)


class RoomLink:
    def __init__(
        self,
        url: str,
        tokens: TokenSource,
        *,
        room_factory: Callable[[], rtc.Room] = rtc.Room,
    ) -> None:
        self._url = url
        self._tokens = tokens
        self._room_factory = room_factory
        self._room: rtc.Room | None = None
        self._connect_lock = asyncio.Lock()
        self._reconnect_task: asyncio.Task[None] | None = None
        self._closed = False
        self.last_error: str | None = None
        self.connects = 0
        self.responses = StreamInbox()
        self._progress_listeners: set[ProgressListener] = set()
        self._left_listeners: set[ParticipantListener] = set()
        self._joined_listeners: set[ParticipantListener] = set()
        self._disconnect_listeners: set[Callable[[], None]] = set()
        self._turn_listeners: set[TurnListener] = set()
        self._traffic_listeners: set[TrafficListener] = set()
        self._stream_tasks: set[asyncio.Task[None]] = set()

    # --- state --------------------------------------------------------------------------------------------------
    @property
    def room(self) -> rtc.Room | None:
        room = self._room
        return room if room is not None and room.isconnected() else None

    @property
    def connected(self) -> bool:
        return self.room is not None

    @property
    def rejoining(self) -> bool:
        """A re-join after a lost connection is scheduled or under way."""
        return self._reconnect_task is not None and not self._reconnect_task.done()

    # --- connecting ---------------------------------------------------------------------------------------------
    async def ensure_connected(self, within: float) -> rtc.Room:
        """The connected room, joining (or waiting for the running re-join) for at most `within` seconds."""
        if self._closed:
            raise TransportUnavailable("the LiveKit transport is closed")
        room = self.room
        if room is not None:
            return room
        try:
            async with asyncio.timeout(within):
                async with self._connect_lock:
                    room = self.room
                    if room is not None:
                        return room
                    return await self._connect_once()
        except TimeoutError:
            self._schedule_reconnect()
            raise TransportUnavailable(
                f"could not join the LiveKit room at {self._url} within {within:.1f} s"
                + (f" ({self.last_error})" if self.last_error else ""),
                "check that the LiveKit server is running and LIVEKIT_URL is right",
            ) from None
        except TransportUnavailable:
            self._schedule_reconnect()
            raise

    async def _connect_once(self) -> rtc.Room:
        token = self._tokens.current()
        room = self._room_factory()
        self._attach(room)
        try:
            await room.connect(self._url, token.jwt, options=rtc.RoomOptions(auto_subscribe=False))
        except BaseException as exc:
            self.last_error = f"{type(exc).__name__}: {exc}".rstrip(": ")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(room.disconnect()), 5.0)
            if isinstance(exc, rtc.ConnectError):
                raise TransportUnavailable(
                    f"could not join the LiveKit room at {self._url}: {exc}",
                    "check LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET and that the server is running",
                ) from exc
            raise
        old, self._room = self._room, room
        if old is not None and old is not room:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(old.disconnect(), 5.0)
        self.last_error = None
        self.connects += 1
        logger.info("joined LiveKit room %s as %s", room.name, room.local_participant.identity)
        return room

    def _schedule_reconnect(self) -> None:
        if self._closed or (self._reconnect_task is not None and not self._reconnect_task.done()):
            return
        self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        for delay in backoff_delays():
            if self._closed or self.connected:
                return
            await asyncio.sleep(delay)
            if self._closed or self.connected:
                return
            try:
                async with self._connect_lock:
                    if self.connected:
                        return
                    await asyncio.wait_for(self._connect_once(), timeout=max(10.0, delay))
                return
            except Exception as exc:
                self.last_error = self.last_error or f"{type(exc).__name__}: {exc}"
                logger.info("LiveKit re-join failed (%s); next attempt in up to %.0f s", exc, min(delay * 2, 30))

    # --- events -------------------------------------------------------------------------------------------------
    def _attach(self, room: rtc.Room) -> None:
        def on_traffic(identity: str) -> None:
            for listener in list(self._traffic_listeners):
                listener(identity)

        def on_data(packet: rtc.DataPacket) -> None:
            if packet.participant is not None:
                on_traffic(packet.participant.identity)
            if packet.topic == TOPIC_TURN:
                on_turn(packet)
                return
            if packet.topic != TOPIC_PROGRESS:
                return
            try:
                progress = Progress.model_validate_json(packet.data)
            except ValueError:
                logger.debug("unreadable progress packet ignored")
                return
            if progress.v != PROTOCOL_VERSION:  # another version's packet is no sign of life of our call
                logger.debug("progress packet of protocol v%d ignored", progress.v)
                return
            for listener in list(self._progress_listeners):
                listener(progress)

        def on_turn(packet: rtc.DataPacket) -> None:
            sender = packet.participant
            if sender is None or not is_worker(sender):
                return
            try:
                notice = TurnNotice.model_validate_json(packet.data)
            except ValueError:
                logger.warning("unreadable turn notice from %s ignored", sender.identity)
                return
            for listener in list(self._turn_listeners):
                listener(sender.identity, notice.utterance)

        def on_disconnected(reason: object = None) -> None:
            if self._room is not room:
                return
            for listener in list(self._disconnect_listeners):
                listener()
            if reason in _NO_AUTOMATIC_REJOIN:
                # another bridge took our identity (a second MCP client), or we were removed on purpose:
                # re-joining at once would only kick it out in turn. The next call that needs the room re-joins.
                self.last_error = f"left the room: {rtc.DisconnectReason.Name(reason)}"  # type: ignore[arg-type]
                logger.warning("LiveKit room connection ended (%s); re-joining when next needed", self.last_error)
                return
            logger.warning("LiveKit room connection lost (%s); re-joining", reason)
            self._schedule_reconnect()

        def on_left(participant: rtc.RemoteParticipant) -> None:
            for listener in list(self._left_listeners):
                listener(participant)

        def on_joined(participant: rtc.RemoteParticipant) -> None:
            for listener in list(self._joined_listeners):
                listener(participant)

        async def read_response(reader: rtc.TextStreamReader) -> None:
            request_id = (reader.info.attributes or {}).get(ATTR_REQUEST_ID)
            if not request_id:
                return
            try:
                self.responses.deliver(request_id, await reader.read_all())
            except Exception as exc:
                self.responses.fail(request_id, exc)

        def on_response_stream(reader: rtc.TextStreamReader, participant_identity: str) -> None:
            task = asyncio.get_running_loop().create_task(read_response(reader))
            self._stream_tasks.add(task)
            task.add_done_callback(self._stream_tasks.discard)

        def on_transcription(
            segments: list[rtc.TranscriptionSegment],
            participant: rtc.Participant | None,
            publication: rtc.TrackPublication | None,
        ) -> None:
            if participant is not None:
                on_traffic(participant.identity)

        room.on("data_received", on_data)
        room.on("transcription_received", on_transcription)
        room.on("disconnected", on_disconnected)
        room.on("participant_disconnected", on_left)
        room.on("participant_connected", on_joined)
        room.register_text_stream_handler(TOPIC_RESPONSE, on_response_stream)

    def on_progress(self, listener: ProgressListener) -> Callable[[], None]:
        self._progress_listeners.add(listener)
        return lambda: self._progress_listeners.discard(listener)

    def on_traffic(self, listener: TrafficListener) -> Callable[[], None]:
        """Call `listener` with the sender's identity for every data packet and transcript received: a participant
        whose packets still arrive is alive, even when its progress packets wait behind them (a worker's
        transcript of a long message can queue thousands of packets ahead of its answer)."""
        self._traffic_listeners.add(listener)
        return lambda: self._traffic_listeners.discard(listener)

    def on_turn(self, listener: TurnListener) -> Callable[[], None]:
        self._turn_listeners.add(listener)
        return lambda: self._turn_listeners.discard(listener)

    def on_participant_left(self, listener: ParticipantListener) -> Callable[[], None]:
        self._left_listeners.add(listener)
        return lambda: self._left_listeners.discard(listener)

    def on_participant_joined(self, listener: ParticipantListener) -> Callable[[], None]:
        self._joined_listeners.add(listener)
        return lambda: self._joined_listeners.discard(listener)

    def on_disconnected(self, listener: Callable[[], None]) -> Callable[[], None]:
        self._disconnect_listeners.add(listener)
        return lambda: self._disconnect_listeners.discard(listener)

    # --- closing ------------------------------------------------------------------------------------------------
    async def aclose(self) -> None:
        self._closed = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(BaseException):
                await self._reconnect_task
        for task in list(self._stream_tasks):
            task.cancel()
        room, self._room = self._room, None
        if room is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(room.disconnect(), timeout=5.0)
