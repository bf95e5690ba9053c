"""The speaker stays open between exchanges for VOICE_MCP_DEVICE_IDLE_MS (`mcp_bridge/local/kept_speaker.py`).

What PulseAudio itself shows is the evidence: our process's connections (clients) to the private server, one per
open PortAudio stream. Two calls in a row play through the same one; it is gone after the idle time, after
`aclose()`, and after every call with an idle time of 0. No wall-clock limits are asserted.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from livekit.agents import vad as lk_vad

from agent.speech import FasterWhisperSTT, PiperTTS
from mcp_bridge.converse_types import ConverseRequest, ListenOptions, Stage
from mcp_bridge.local import LocalTransport
from tests.audio.pulse import VirtualAudio, start_virtual_audio, stop_virtual_audio

from .conftest import Progress, SpeakPcm, make_settings, voiced_seconds
from .test_exchange import LONG_MESSAGE, echo_verdict
from .test_salvage import kill_pulseaudio

pytestmark = pytest.mark.audio

BOUND = 180.0  # seconds: only so that a hang fails the test
SHORT = "The tests passed."


def our_connections(audio: VirtualAudio) -> list[int]:
    """Indexes of this process's clients on the private PulseAudio: one per open PortAudio stream (the ALSA plugin
    connects when a stream is opened and disconnects when it is closed; starting a stopped stream again makes a new
    sink input on the same connection)."""
    found = []
    for block in audio.pactl("list", "clients").split("Client #")[1:]:
        if re.search(rf'application\.process\.id = "{os.getpid()}"', block):
            found.append(int(block.split()[0]))
    return found


async def until_connections(audio: VirtualAudio, expected: int) -> list[int]:
    """Our connections once there are `expected` of them (or as they are after 10 s): the server may take a moment
    to drop a client that closed its stream."""
    deadline = time.monotonic() + 10
    while True:
        found = await asyncio.to_thread(our_connections, audio)
        if len(found) == expected or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


async def speak(transport: LocalTransport, message: str, progress: Progress | None = None) -> None:
    request = ConverseRequest(message=message, wait_for_response=False)
    await asyncio.wait_for(transport.converse(request, progress or Progress()), BOUND)
    await transport.settle()  # the exchange has handed the speaker over (or closed it)


def transport_with(
    tmp_path: Path, idle_ms: int, whisper: FasterWhisperSTT, piper: PiperTTS, vad: lk_vad.VAD, **settings: object
) -> LocalTransport:
    config = make_settings(data_dir=tmp_path, device_idle_ms=idle_ms, silence_ms=800, listen_min=0.5, **settings)
    return LocalTransport(config, stt=whisper, tts=piper, vad=vad)


async def test_two_calls_in_a_row_play_through_the_same_stream_and_aclose_closes_it(
    tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    virtual_audio: VirtualAudio, speak_pcm: SpeakPcm,
) -> None:
    transport = transport_with(tmp_path, 60_000, whisper, piper, shared_vad)
    second = "And the documentation is up to date."
    spoken = voiced_seconds(await speak_pcm(SHORT)) + voiced_seconds(await speak_pcm(second))
    try:
        with virtual_audio.record_speaker() as speaker:
            await speak(transport, SHORT)
            kept = await until_connections(virtual_audio, 1)
            assert len(kept) == 1 and transport.speaker.holding
            await speak(transport, second)
            assert await until_connections(virtual_audio, 1) == kept  # the same open stream served both
            played = speaker.stop()
        assert voiced_seconds(played) > spoken * 0.8, (voiced_seconds(played), spoken)  # both were heard
    finally:
        await transport.aclose()
    assert not transport.speaker.holding
    assert await until_connections(virtual_audio, 0) == []


async def test_the_speaker_closes_after_the_idle_time(
    tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    virtual_audio: VirtualAudio,
) -> None:
    transport = transport_with(tmp_path, 500, whisper, piper, shared_vad)
    try:
        await speak(transport, SHORT)
        assert transport.speaker.holding
        await asyncio.wait_for(transport.speaker.expired.wait(), BOUND)
        assert not transport.speaker.holding
        assert await until_connections(virtual_audio, 0) == []
        await speak(transport, SHORT)  # a call after that opens the speaker again
        assert len(await until_connections(virtual_audio, 1)) == 1
    finally:
        await transport.aclose()


async def test_with_idle_time_zero_the_speaker_closes_after_every_call(
    tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    virtual_audio: VirtualAudio,
) -> None:
    transport = transport_with(tmp_path, 0, whisper, piper, shared_vad)
    try:
        await speak(transport, SHORT)
        assert not transport.speaker.holding
        assert await until_connections(virtual_audio, 0) == []
    finally:
        await transport.aclose()


async def test_a_call_cancelled_while_playing_through_the_kept_stream_is_safe(
    tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    virtual_audio: VirtualAudio,
) -> None:
    transport = transport_with(tmp_path, 60_000, whisper, piper, shared_vad)
    try:
        await speak(transport, SHORT)
        kept = await until_connections(virtual_audio, 1)
        for _ in range(2):  # twice: the stream a cancelled call stopped plays again, and can be cancelled again
            progress = Progress()
            with virtual_audio.record_speaker() as speaker:
                call = asyncio.create_task(
                    transport.converse(ConverseRequest(message=LONG_MESSAGE, listen=ListenOptions(max_seconds=5)),
                                       progress)
                )
                await asyncio.wait_for(progress.reached(Stage.SPEAKING).wait(), BOUND)
                assert await asyncio.to_thread(speaker.wait_for_sound, 60.0)  # it is playing
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            assert transport.speaker.holding  # stopped and kept, not lost
            assert await until_connections(virtual_audio, 1) == kept
        with virtual_audio.record_speaker() as speaker:
            await speak(transport, SHORT)  # and the next call plays through it normally
            played = speaker.stop()
        assert voiced_seconds(played) > 0.5
        assert await until_connections(virtual_audio, 1) == kept
    finally:
        await transport.aclose()
    assert await until_connections(virtual_audio, 0) == []


async def test_the_echo_canceller_hears_the_kept_speaker(
    tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    virtual_audio: VirtualAudio, speak_pcm: SpeakPcm,
) -> None:
    """The second exchange plays through the kept stream with a fresh echo canceller: the canceller is told what
    is played (it finds the echo path), and the assistant's own voice through the loudspeaker does not interrupt
    it."""
    transport = transport_with(tmp_path, 60_000, whisper, piper, shared_vad)
    message_seconds = voiced_seconds(await speak_pcm(LONG_MESSAGE))
    try:
        await speak(transport, SHORT)
        assert transport.speaker.holding
        request = ConverseRequest(message=LONG_MESSAGE, listen=ListenOptions(max_seconds=2, audio_cues=False))
        with echo_verdict("echo path found") as found, virtual_audio.echo_path(gain=0.3), \
                virtual_audio.record_speaker() as speaker:
            result = await asyncio.wait_for(transport.converse(request, Progress()), BOUND)
            played = speaker.stop()
        assert found.is_set()  # the speaker's reference reached the new exchange's canceller
        assert not result.interrupted
        assert voiced_seconds(played) > message_seconds * 0.8, (voiced_seconds(played), message_seconds)
    finally:
        await transport.aclose()


async def test_a_kept_speaker_whose_sound_server_restarted_is_replaced_by_a_fresh_one(
    tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    virtual_audio: VirtualAudio,
) -> None:
    """PulseAudio crashes and comes back while the speaker is kept: the next call still plays (through a new
    stream), instead of failing on the dead one."""
    doomed_dir = Path(tempfile.mkdtemp(prefix="vmcp-kept-"))
    doomed = start_virtual_audio(doomed_dir)
    saved = os.environ["PULSE_SERVER"]
    os.environ["PULSE_SERVER"] = doomed.env["PULSE_SERVER"]  # the ALSA pulse plugin connects at open time
    transport = transport_with(tmp_path, 60_000, whisper, piper, shared_vad)
    try:
        await speak(transport, SHORT)
        assert transport.speaker.holding
        await asyncio.to_thread(kill_pulseaudio, doomed)
        doomed = start_virtual_audio(doomed_dir)  # back, on the same socket
        with doomed.record_speaker() as speaker:
            await speak(transport, SHORT)
            played = speaker.stop()
        assert voiced_seconds(played) > 0.5
        assert transport.speaker.holding
    finally:
        os.environ["PULSE_SERVER"] = saved
        await transport.aclose()
        await asyncio.to_thread(stop_virtual_audio, doomed)
        shutil.rmtree(doomed_dir, ignore_errors=True)
