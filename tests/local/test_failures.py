"""Failures the user must hear about clearly: missing or broken devices, and STT failing on a recorded reply."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIConnectionError, APIConnectOptions, stt
from livekit.agents import vad as lk_vad
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.agents.utils import AudioBuffer

from agent.speech import FasterWhisperSTT, PiperTTS
from agent.speech.audio import resample_int16
from mcp_bridge.converse_types import AudioDeviceError, ConverseRequest, ListenOptions, Stage, TranscriptionFailed
from mcp_bridge.local import LocalTransport
from tests.audio.pulse import VirtualAudio, start_virtual_audio, stop_virtual_audio

from .conftest import Progress, SpeakPcm, make_settings, wer

pytestmark = pytest.mark.audio

REPLY = "Send the report to the whole team before lunch tomorrow and copy my manager as well."
BOUND = 180.0
ROOT = Path(__file__).resolve().parents[2]


class BrokenSTT(stt.STT):
    """An STT provider whose every request fails, as a crashed or unreachable server does."""

    def __init__(self) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.calls = 0

    async def _recognize_impl(
        self, buffer: AudioBuffer, *, language: NotGivenOr[str] = NOT_GIVEN, conn_options: APIConnectOptions
    ) -> stt.SpeechEvent:
        self.calls += 1
        raise APIConnectionError("connection refused", retryable=False)


def read_wav_16k(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
        rate = wav.getframerate()
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
    return resample_int16(pcm, rate, 16000)


async def test_stt_failure_keeps_the_reply_as_a_wav_file(
    tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    virtual_audio: VirtualAudio, speak_pcm: SpeakPcm, progress: Progress,
) -> None:
    settings = make_settings(data_dir=tmp_path, silence_ms=800, listen_min=0.5)
    broken = BrokenSTT()
    transport = LocalTransport(settings, stt=broken, tts=piper, vad=shared_vad)
    reply = await speak_pcm(REPLY)

    async def speak_reply() -> None:
        await progress.reached(Stage.LISTENING).wait()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(virtual_audio.play_into_mic, reply)

    feeder = asyncio.create_task(speak_reply())
    request = ConverseRequest(message="What should I do with the report?", listen=ListenOptions(max_seconds=30))
    try:
        with pytest.raises(TranscriptionFailed) as caught:
            await asyncio.wait_for(transport.converse(request, progress), timeout=BOUND)
        await asyncio.wait_for(feeder, timeout=BOUND)
    finally:
        await transport.aclose()

    error = caught.value
    assert broken.calls >= 1
    assert error.audio_path is not None and error.audio_path.is_file()
    assert error.audio_path.parent == tmp_path / "recordings"
    assert str(error.audio_path) in str(error)
    # the saved file holds the user's reply: the real STT understands it
    saved = read_wav_16k(error.audio_path)
    frame = rtc.AudioFrame(saved.tobytes(), 16000, 1, saved.size)
    text = (await whisper.recognize([frame])).alternatives[0].text
    assert wer(REPLY, text) <= 0.15, text


async def test_bad_device_name_is_a_device_error_with_a_hint(
    tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    virtual_audio: VirtualAudio, progress: Progress,
) -> None:
    settings = make_settings(data_dir=tmp_path, input_device="no-such-microphone")
    transport = LocalTransport(settings, stt=whisper, tts=piper, vad=shared_vad)
    with pytest.raises(AudioDeviceError) as caught:
        await asyncio.wait_for(transport.converse(ConverseRequest(message="Hello"), progress), timeout=BOUND)
    error = caught.value
    assert "no-such-microphone" in error.message
    assert "VOICE_MCP_INPUT_DEVICE" in error.hint
    assert "pulse" in error.hint  # the devices that do exist are listed
    health = await transport.health()
    assert not health.available and "VOICE_MCP_INPUT_DEVICE" in health.detail

    speaker = make_settings(data_dir=tmp_path, output_device="99")
    transport = LocalTransport(speaker, stt=whisper, tts=piper, vad=shared_vad)
    with pytest.raises(AudioDeviceError) as caught:
        await asyncio.wait_for(
            transport.converse(ConverseRequest(message="Hello", wait_for_response=False), progress), timeout=BOUND
        )
    assert "VOICE_MCP_OUTPUT_DEVICE" in caught.value.hint


_NO_DEVICE_SCRIPT = """
import asyncio, json
from agent.config import load_settings
from mcp_bridge.local.transport import LocalTransport
from mcp_bridge.converse_types import AudioDeviceError, ConverseRequest, no_progress

async def main():
    t = LocalTransport(load_settings(env_file=None), stt=None, tts=None, vad=None)
    health = await t.health()
    try:
        await t.converse(ConverseRequest(message="hi"), no_progress)
        print(json.dumps({"raised": None}))
    except AudioDeviceError as e:
        print(json.dumps({"raised": e.code, "message": e.message, "hint": e.hint, "available": health.available}))

asyncio.run(main())
"""


def _run_without_sound_server(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`python ARGS` on a machine without a sound server: PortAudio lists no devices (a fresh process, as PortAudio
    lists devices once)."""
    empty = Path(tempfile.mkdtemp(prefix="vmcp-nodev-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOICE_MCP_", "PULSE_", "LIVEKIT_"))}
    env.update(
        XDG_RUNTIME_DIR=str(empty), PULSE_SERVER=f"unix:{empty}/none", HOME=str(tmp_path),
        VOICE_MCP_DATA_DIR=str(tmp_path / "data"),
    )
    try:
        return subprocess.run(
            [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(empty, ignore_errors=True)


def test_no_input_device_at_all_is_a_device_error_not_a_hang(tmp_path: Path) -> None:
    proc = _run_without_sound_server(["-c", _NO_DEVICE_SCRIPT], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome["raised"] == "audio_device"
    assert "No " in outcome["message"] and "found" in outcome["message"]
    assert "No audio device was found" in outcome["hint"] and "voice-mcp doctor" in outcome["hint"]
    assert "LIVEKIT_URL" in outcome["hint"]
    assert "VOICE_MCP_OUTPUT_DEVICE" not in outcome["hint"]  # naming a device cannot help without any
    assert outcome["available"] is False
    assert "Traceback" not in proc.stderr


def test_cli_converse_without_any_device_says_where_to_go_in_one_line(tmp_path: Path) -> None:
    """What a user of `voice-mcp converse` sees on a machine with no sound card: one line, no traceback."""
    proc = _run_without_sound_server(["-m", "mcp_bridge", "converse", "Hello there.", "--transport", "local"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    error = [line for line in proc.stderr.splitlines() if line.startswith("voice-mcp:")]
    assert len(error) == 1, proc.stderr[-2000:]
    assert error[0].startswith("voice-mcp: [audio_device] No speaker found")
    assert "No audio device was found on this computer" in error[0]
    assert "voice-mcp doctor" in error[0] and "LIVEKIT_URL" in error[0]
    assert proc.stdout == ""


async def test_a_device_that_dies_mid_listen_is_a_device_error(
    tmp_path: Path, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    virtual_audio: VirtualAudio, progress: Progress,
) -> None:
    """The sound server vanishes while listening (a USB headset unplugged, say): an error, not a hang."""
    doomed_dir = Path(tempfile.mkdtemp(prefix="vmcp-doomed-"))
    doomed = start_virtual_audio(doomed_dir)
    saved = os.environ["PULSE_SERVER"]
    os.environ["PULSE_SERVER"] = doomed.env["PULSE_SERVER"]  # the ALSA pulse plugin connects at open time
    transport = LocalTransport(make_settings(data_dir=tmp_path), stt=whisper, tts=piper, vad=shared_vad)
    try:
        request = ConverseRequest(message="Say something.", listen=ListenOptions(max_seconds=60))
        task = asyncio.create_task(transport.converse(request, progress))
        await asyncio.wait_for(progress.reached(Stage.LISTENING).wait(), timeout=BOUND)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(stop_virtual_audio, doomed)
        with pytest.raises(AudioDeviceError) as caught:
            await asyncio.wait_for(task, timeout=BOUND)
    finally:
        os.environ["PULSE_SERVER"] = saved
        await transport.aclose()
        await asyncio.to_thread(stop_virtual_audio, doomed)
        shutil.rmtree(doomed_dir, ignore_errors=True)
    assert "stopped working" in caught.value.message
    assert "VOICE_MCP_INPUT_DEVICE" in caught.value.hint
