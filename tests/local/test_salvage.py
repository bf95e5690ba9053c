"""Nothing the user said is lost: a reply that cannot be transcribed, or that a dying sound server cut off, is saved
privately and the typed error names the file; salvaged files are pruned after VOICE_MCP_KEEP_FAILED_AUDIO_DAYS."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import vad as lk_vad
from mcp import Client

from agent.speech import FasterWhisperSTT, PiperTTS
from mcp_bridge.converse_types import AudioDeviceError, ConverseRequest, ListenOptions, Stage
from mcp_bridge.local import LocalTransport
from mcp_bridge.local.recording import fallback_dir, prune, save_failed_reply
from mcp_bridge.server import create_server
from tests.audio.pulse import VirtualAudio, start_virtual_audio, stop_virtual_audio
from tests.speech.openai_compatible_server import closed_port_url

from .conftest import Progress, SpeakPcm, make_settings, wer
from .test_failures import read_wav_16k

REPLY = "Send the report to the whole team before lunch tomorrow and copy my manager as well."
FIRST_HALF = "Send the report to the whole team before lunch tomorrow."
SECOND_HALF = "And copy my manager as well, and the finance people too, please."
BOUND = 180.0


async def transcribe_file(whisper: FasterWhisperSTT, path: Path) -> str:
    pcm = read_wav_16k(path)
    frame = rtc.AudioFrame(pcm.tobytes(), 16000, 1, pcm.size)
    return (await whisper.recognize([frame])).alternatives[0].text


def assert_private(path: Path) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, oct(path.stat().st_mode)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, oct(path.parent.stat().st_mode)


@pytest.mark.audio
async def test_unreachable_stt_and_unwritable_data_dir_still_keep_the_reply(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, whisper: FasterWhisperSTT, piper: PiperTTS,
    virtual_audio: VirtualAudio, speak_pcm: SpeakPcm,
) -> None:
    """Through the MCP server (in-memory client): the STT is a closed port, the data dir is below a plain file."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the data dir's parent should be")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    settings = make_settings(
        data_dir=blocker / "voice-mcp", stt=[closed_port_url()], silence_ms=800, listen_min=0.5, exchange_log=False
    )
    reply = await speak_pcm(REPLY)
    listening = asyncio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        if (message or "").startswith("listening"):
            listening.set()

    async def answer() -> None:
        await listening.wait()
        await asyncio.to_thread(virtual_audio.play_into_mic, reply)

    async with Client(create_server(settings, prewarm=False), read_timeout_seconds=BOUND) as client:
        answering = asyncio.create_task(answer())
        result = await asyncio.wait_for(
            client.call_tool("converse", {"message": "What should I do with the report?", "transport": "local"},
                             progress_callback=on_progress),
            BOUND,
        )
        await asyncio.wait_for(answering, BOUND)

    text = result.content[0].text
    assert result.is_error and text.startswith("[transcription_failed] "), text
    saved_dir = fallback_dir()
    assert saved_dir.is_relative_to(tmp_path / "tmp")
    saved = list(saved_dir.glob("reply-*.wav"))
    assert len(saved) == 1 and str(saved[0]) in text, (saved, text)
    assert_private(saved[0])
    assert wer(REPLY, await transcribe_file(whisper, saved[0])) <= 0.15


@pytest.mark.audio
async def test_sound_server_killed_mid_reply_keeps_what_was_said_and_the_next_call_works(
    tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    virtual_audio: VirtualAudio, speak_pcm: SpeakPcm,
) -> None:
    """PulseAudio is killed while the user is in the middle of a reply: a typed device error naming the saved part of
    the reply; once PulseAudio is back, the same transport converses normally."""
    first, second = await speak_pcm(FIRST_HALF), await speak_pcm(SECOND_HALF)
    doomed_dir = Path(tempfile.mkdtemp(prefix="vmcp-killed-"))
    doomed = start_virtual_audio(doomed_dir)
    saved_server = os.environ["PULSE_SERVER"]
    os.environ["PULSE_SERVER"] = doomed.env["PULSE_SERVER"]  # the ALSA pulse plugin connects at open time
    try:
        # a generous STT bound: on a loaded machine Whisper may be slow, and STT speed is not what is tested here
        settings = make_settings(data_dir=tmp_path, silence_ms=800, listen_min=0.5, provider_timeout=60)
        transport = LocalTransport(settings, stt=whisper, tts=piper, vad=shared_vad)
        progress = Progress()
        request = ConverseRequest(message="Anything for the report?", listen=ListenOptions(max_seconds=60))
        call = asyncio.create_task(transport.converse(request, progress))
        await asyncio.wait_for(progress.reached(Stage.LISTENING).wait(), BOUND)
        await asyncio.sleep(0.5)  # after the listening cue, as below (speech over the chime is misheard)
        await asyncio.to_thread(doomed.play_into_mic, first)  # the user has said the first half ...
        still_talking = doomed.play_into_mic(second, wait=False)  # ... and is saying the rest when it dies
        await asyncio.to_thread(kill_pulseaudio, doomed)
        still_talking.wait(timeout=30)
        with pytest.raises(AudioDeviceError) as caught:
            await asyncio.wait_for(call, BOUND)
        error = caught.value
        assert error.audio_path is not None and error.audio_path.is_file(), str(error)
        assert str(error.audio_path) in str(error) and error.audio_path.parent == tmp_path / "recordings"
        assert_private(error.audio_path)
        heard = await transcribe_file(whisper, error.audio_path)
        assert wer(FIRST_HALF, heard.split(".")[0] + ".") <= 0.25, heard  # what was said before the death is kept

        doomed = start_virtual_audio(doomed_dir)  # the sound server is back (same socket)
        progress = Progress()
        call = asyncio.create_task(transport.converse(request, progress))
        await asyncio.wait_for(progress.reached(Stage.LISTENING).wait(), BOUND)
        # the user answers after the listening cue, as in the other exchanges (0.5 s): a reply started on top of the
        # chime lost its first words once in CI ("Send the report" heard as "I'm going to report"), which is not what
        # this test is about (docs/local-loop.md: speech over the cues)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(doomed.play_into_mic, await speak_pcm(REPLY))
        result = await asyncio.wait_for(call, BOUND)
        assert result.heard_speech and wer(REPLY, result.text) <= 0.15, result.text
        await transport.aclose()
    finally:
        os.environ["PULSE_SERVER"] = saved_server
        await asyncio.to_thread(stop_virtual_audio, doomed)
        shutil.rmtree(doomed_dir, ignore_errors=True)


def kill_pulseaudio(audio: VirtualAudio) -> None:
    """SIGKILL, as a crash: no clean goodbye to the clients."""
    pid = int((audio.runtime_dir / "pulse" / "pid").read_text().strip())
    os.kill(pid, 9)
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


# --- where salvaged replies go, and for how long ------------------------------------------------------------------


def test_salvaged_replies_are_private_and_pruned_after_the_configured_days(tmp_path: Path) -> None:
    samples = (np.sin(np.arange(16000) / 10) * 8000).astype(np.int16)
    recordings = tmp_path / "recordings"
    path = save_failed_reply(samples, 16000, recordings, keep_days=7)
    assert path is not None and path.parent == recordings
    assert_private(path)
    old = save_failed_reply(samples, 16000, recordings, keep_days=7)
    assert old is not None
    eight_days_ago = time.time() - 8 * 86400
    os.utime(old, (eight_days_ago, eight_days_ago))
    newest = save_failed_reply(samples, 16000, recordings, keep_days=7)  # saving prunes what is too old
    assert newest is not None
    assert sorted(recordings.glob("reply-*.wav")) == sorted([path, newest])
    assert prune(recordings, 0) == 2 and not list(recordings.glob("*.wav"))


def test_keeping_zero_days_saves_nothing(tmp_path: Path) -> None:
    samples = np.zeros(1600, dtype=np.int16)
    assert save_failed_reply(samples, 16000, tmp_path / "recordings", keep_days=0) is None
    assert not (tmp_path / "recordings").exists()


def test_a_loose_existing_directory_is_tightened_and_an_unusable_one_falls_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loose = tmp_path / "recordings"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    path = save_failed_reply(np.zeros(160, dtype=np.int16), 16000, loose, keep_days=1)
    assert path is not None and path.parent == loose
    assert_private(path)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    rescued = save_failed_reply(np.zeros(160, dtype=np.int16), 16000, blocker / "recordings", keep_days=1)
    assert rescued is not None and rescued.parent == fallback_dir()
    assert_private(rescued)
