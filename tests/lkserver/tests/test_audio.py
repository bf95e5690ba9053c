"""A published audio track reaches the other participants, through the server, as sound.

The publisher plays a 440 Hz sine; subscribers record what arrives and check its dominant
frequency and level (the server forwards the Opus packets as they are).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from livekit import rtc

from tests.lkserver.fixtures import LiveKitServerProcess

from .helpers import SAMPLE_RATE, Events, dominant_frequency, eventually, play_tone, record, rms

pytestmark = [pytest.mark.livekit, pytest.mark.usefixtures("livekit_network")]

TONE_HZ = 440.0


@pytest.fixture(params=["v1", "fallback"])
def server(request, livekit_server, livekit_server_no_v1) -> LiveKitServerProcess:
    return livekit_server if request.param == "v1" else livekit_server_no_v1


@contextlib.asynccontextmanager
async def tone_track(room: rtc.Room, frequency: float) -> AsyncIterator[rtc.LocalTrackPublication]:
    """Publish a microphone track playing ``frequency`` for the duration of the block."""
    source = rtc.AudioSource(SAMPLE_RATE, 1)
    track = rtc.LocalAudioTrack.create_audio_track("tone", source)
    stop = asyncio.Event()
    player = asyncio.create_task(play_tone(source, frequency, stop))
    try:
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        yield await room.local_participant.publish_track(track, options)
    finally:
        stop.set()
        await player
        await source.aclose()


def assert_is_tone(samples, frequency: float) -> None:
    settled = samples[SAMPLE_RATE // 2 :]  # skip the first half second (codec start-up)
    assert rms(settled) > 0.1, f"received audio is too quiet: rms {rms(settled):.4f}"
    assert abs(dominant_frequency(settled) - frequency) < 10


async def test_published_tone_is_heard_by_the_others(server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(server, "alice", livekit_room_name)
    bob = await livekit_connect(server, "bob", livekit_room_name)
    at_bob = Events(bob, "track_subscribed")
    told_alice = Events(alice, "local_track_subscribed")

    async with tone_track(alice, TONE_HZ) as publication:
        track, remote_publication, participant = await at_bob.next()
        # the publisher hears that somebody subscribed (livekit-agents waits for this before it speaks)
        (local_track,) = await told_alice.next()
        assert local_track.sid == publication.sid
        assert participant.identity == "alice"
        assert remote_publication.sid == publication.sid
        assert remote_publication.source == rtc.TrackSource.SOURCE_MICROPHONE
        assert track.kind == rtc.TrackKind.KIND_AUDIO
        assert_is_tone(await record(track, 2.0), TONE_HZ)

        # somebody joining later is subscribed to the track already there
        carol = await livekit_connect(server, "carol", livekit_room_name)
        at_carol = Events(carol, "track_subscribed")
        track, _, participant = await at_carol.next()
        assert participant.identity == "alice"
        assert_is_tone(await record(track, 1.5), TONE_HZ)


async def test_unpublishing_and_leaving_end_the_subscription(server, livekit_connect, livekit_room_name):
    alice = await livekit_connect(server, "alice", livekit_room_name)
    bob = await livekit_connect(server, "bob", livekit_room_name)
    subscribed = Events(bob, "track_subscribed")
    unpublished = Events(bob, "track_unpublished")
    left = Events(bob, "participant_disconnected")

    async with tone_track(alice, TONE_HZ) as publication:
        await subscribed.next()
        await alice.local_participant.unpublish_track(publication.sid)
        remote_publication, participant = await unpublished.next()
        assert (remote_publication.sid, participant.identity) == (publication.sid, "alice")
        await eventually(lambda: not bob.remote_participants["alice"].track_publications)

    async with tone_track(alice, 660.0):
        track, _, _ = await subscribed.next()
        assert_is_tone(await record(track, 1.5), 660.0)
        await alice.disconnect()
        (participant,) = await left.next()
        assert participant.identity == "alice"
