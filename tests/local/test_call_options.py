"""Per-call options the local loop's providers cannot honour are refused before any device is opened."""

from __future__ import annotations

import pytest
from livekit.agents import vad as lk_vad

from agent.speech import FasterWhisperSTT, PiperTTS
from mcp_bridge.converse_types import ConverseRequest, ListenOptions, SpeakOptions, UnsupportedOption, no_progress
from mcp_bridge.local import LocalTransport

from .conftest import make_settings


@pytest.mark.parametrize(
    ("request_", "option"),
    [
        (ConverseRequest(message="Wie geht's?", listen=ListenOptions(language="de")), "language"),
        (ConverseRequest(message="Hello.", speak=SpeakOptions(voice="/no/such/voice.onnx")), "voice"),
    ],
)
async def test_an_option_no_provider_can_take_is_refused_and_the_providers_are_unchanged(
    tmp_path: object, whisper: FasterWhisperSTT, piper: PiperTTS, shared_vad: lk_vad.VAD,
    request_: ConverseRequest, option: str,
) -> None:
    # no such devices: a refusal must come before the loop touches the microphone or speaker
    settings = make_settings(data_dir=tmp_path, input_device="no-such-microphone", output_device="no-such-speaker")
    transport = LocalTransport(settings, stt=whisper, tts=piper, vad=shared_vad)
    with pytest.raises(UnsupportedOption) as caught:
        await transport.converse(request_, no_progress)
    assert option in str(caught.value) and caught.value.hint
    assert whisper.language == "en" and piper.voice == "en_US-joe-medium"
    await transport.aclose()
