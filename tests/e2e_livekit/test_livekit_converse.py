"""converse through a real LiveKit room: bridge transport -> loopback server -> real worker -> a real user."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import jiwer
import numpy as np
import pytest
from livekit import rtc

from agent.config import Settings
from agent.protocol import PingReply
from agent.speech import FasterWhisperSTT, PiperTTS
from mcp_bridge.converse_types import ConverseRequest, ConverseTimeout, ListenOptions, Stage, TransportUnavailable
from mcp_bridge.livekit import LiveKitTransport
from mcp_bridge.livekit.workers import WorkerHandle

from .conftest import synthesize, wait_until
from .harness import USER_RATE, TestUser, WorkerProcess, agent_transcript_text

pytestmark = [pytest.mark.livekit, pytest.mark.timeout(600)]


def words(text: str) -> set[str]:
    return set(jiwer.RemovePunctuation()(text.lower()).split())


class StageLog:
    def __init__(self) -> None:
        self.stages: list[Stage] = []
        self.listening = asyncio.Event()

    async def __call__(self, stage: Stage, message: str) -> None:
        self.stages.append(stage)
        if stage == Stage.LISTENING:
            self.listening.set()


async def worker_state(
    transport: LiveKitTransport, condition: Callable[[PingReply], bool], what: str, within: float = 60.0
) -> WorkerHandle:
    """Ping the worker until its state meets `condition` (bounded; the state lives in another process)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        worker = await transport.ensure_worker(30)
        if condition(worker.info):
            return worker
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}: {worker.info}")
        await asyncio.sleep(0.2)


async def transcribe(whisper: FasterWhisperSTT, samples: np.ndarray) -> str:
    frame = rtc.AudioFrame(samples.tobytes(), USER_RATE, 1, samples.size)
    event = await whisper.recognize([frame])
    return event.alternatives[0].text


async def test_converse_speaks_to_the_user_and_returns_the_spoken_reply(
    lk_worker: WorkerProcess,
    lk_settings: Callable[..., Settings],
    lk_user: TestUser,
    whisper: FasterWhisperSTT,
    piper: PiperTTS,
) -> None:
    transport = LiveKitTransport(lk_settings(), worker_start_timeout=120)
    stages = StageLog()
    message = "The build is green. Shall I deploy the release to staging now?"
    reply = "Yes please, deploy it to staging."
    try:
        call = asyncio.create_task(
            transport.converse(ConverseRequest(message=message, listen=ListenOptions(max_seconds=90)), stages)
        )
        await asyncio.wait_for(stages.listening.wait(), 180)

        heard = await transcribe(whisper, lk_user.heard.voiced())
        assert {"deploy", "release", "staging"} <= words(heard), heard

        await lk_user.speak(await synthesize(piper, reply))
        result = await asyncio.wait_for(call, 120)
    finally:
        await transport.aclose()

    assert result.transport == "livekit"
    assert result.heard_speech and result.ended_by == "silence"
    assert {"deploy", "staging"} <= words(result.text), result.text
    assert result.timings.first_audio_ms is not None and result.timings.speak_ms is not None
    assert result.tts_provider == "piper" and result.stt_provider == "faster-whisper"
    assert Stage.SPEAKING in stages.stages and stages.stages[-1] == Stage.DONE
    # what LiveKit frontends (the Agents Playground) show: the worker publishes its speech as transcription
    await wait_until(lambda: "staging" in agent_transcript_text(lk_user).lower(), 30, "the agent transcription")


async def test_a_worker_killed_mid_converse_fails_the_call_and_the_next_call_works(
    start_lk_worker: Callable[..., WorkerProcess],
    lk_settings: Callable[..., Settings],
    lk_user: TestUser,
    piper: PiperTTS,
) -> None:
    agent_name = "voice-mcp-crash-test"  # its own workers: the shared one must not take these dispatches
    worker = start_lk_worker(voice_mcp_agent_name=agent_name)
    transport = LiveKitTransport(lk_settings(agent_name=agent_name, livekit_timeout=5.0), worker_start_timeout=120)
    try:
        stages = StageLog()
        # listening for up to ten minutes: only noticing the dead worker can end this call early
        doomed = asyncio.create_task(
            transport.converse(
                ConverseRequest(message="Tell me when you are ready.", listen=ListenOptions(max_seconds=600)), stages
            )
        )
        await asyncio.wait_for(stages.listening.wait(), 180)
        worker.kill()
        with pytest.raises((ConverseTimeout, TransportUnavailable)) as caught:
            await asyncio.wait_for(doomed, 90)
        assert caught.value.hint, "the error says what to do"

        start_lk_worker(voice_mcp_agent_name=agent_name)
        stages = StageLog()
        call = asyncio.create_task(
            transport.converse(
                ConverseRequest(message="I am back. Are you still there?", listen=ListenOptions(max_seconds=90)),
                stages,
            )
        )
        await asyncio.wait_for(stages.listening.wait(), 180)
        await lk_user.speak(await synthesize(piper, "Yes, I am still here."))
        result = await asyncio.wait_for(call, 120)
        joins = transport.link.connects
    finally:
        await transport.aclose()
    assert result.transport == "livekit"
    assert "here" in words(result.text), result.text
    assert joins == 1, "the bridge kept its one room connection through both calls"


async def test_what_the_user_says_with_no_converse_waiting_is_returned_by_the_next_converse(
    lk_worker: WorkerProcess,
    lk_settings: Callable[..., Settings],
    lk_user: TestUser,
    piper: PiperTTS,
) -> None:
    transport = LiveKitTransport(lk_settings(), worker_start_timeout=120)
    try:
        await transport.ensure_worker(120)  # dispatched and in the room, nobody calling converse
        await worker_state(transport, lambda info: info.user_identity == "alice", "the worker to listen to the user")

        await lk_user.speak(await synthesize(piper, "Remember to update the changelog before the release."))
        worker = await worker_state(transport, lambda info: info.queued > 0, "the turn to be queued")
        assert worker.info.queued == 1

        result = await asyncio.wait_for(
            transport.converse(ConverseRequest(message="Anything else before I start?"), StageLog()), 180
        )
    finally:
        await transport.aclose()
    assert result.transport == "livekit" and result.heard_speech
    assert {"remember", "update", "release"} <= words(result.text), result.text


async def test_a_cancelled_converse_frees_the_worker_and_keeps_what_the_user_says(
    lk_worker: WorkerProcess,
    lk_settings: Callable[..., Settings],
    lk_user: TestUser,
    piper: PiperTTS,
) -> None:
    transport = LiveKitTransport(lk_settings(), worker_start_timeout=120)
    try:
        stages = StageLog()
        abandoned = asyncio.create_task(
            transport.converse(
                ConverseRequest(message="Take your time.", listen=ListenOptions(max_seconds=300)), stages
            )
        )
        await asyncio.wait_for(stages.listening.wait(), 180)
        abandoned.cancel()  # what an MCP client's cancellation does to the tool call
        with pytest.raises(asyncio.CancelledError):
            await abandoned

        await worker_state(transport, lambda info: not info.busy, "the worker to hear of the cancel")

        await lk_user.speak(await synthesize(piper, "Please remember to water the plants tomorrow morning."))
        await worker_state(transport, lambda info: info.queued > 0, "the turn to be queued")
        result = await asyncio.wait_for(
            transport.converse(ConverseRequest(message="Sorry, where were we?"), StageLog()), 180
        )
    finally:
        await transport.aclose()
    assert {"water", "plants", "tomorrow"} <= words(result.text), result.text


def cue_match(heard: np.ndarray, cue: rtc.AudioFrame) -> float:
    """Best normalised cross-correlation (0…1) of the cue's waveform anywhere in `heard` (speech stays far below)."""
    template = np.frombuffer(cue.data, dtype=np.int16).astype(np.float64)
    if heard.size < template.size:
        return 0.0
    signal = heard.astype(np.float64)
    n = 1 << int(np.ceil(np.log2(signal.size + template.size)))
    spectrum = np.fft.rfft(signal, n) * np.conj(np.fft.rfft(template, n))
    corr = np.fft.irfft(spectrum, n)[: signal.size - template.size + 1]
    energy = np.concatenate([[0.0], np.cumsum(signal**2)])
    window_energy = energy[template.size :] - energy[: signal.size - template.size + 1]
    norm = np.sqrt(np.maximum(window_energy, 1e-9) * (template**2).sum())
    return float(np.max(np.abs(corr) / norm))


async def test_per_call_options_reach_the_worker_cues_voice_and_language(
    lk_worker: WorkerProcess,
    lk_settings: Callable[..., Settings],
    lk_user: TestUser,
    piper: PiperTTS,
) -> None:
    """chimes are played into the room, a voice is applied or refused by the worker, a language the worker's STT
    cannot transcribe is refused there — none of them is dropped on the way."""
    import time

    from agent.cues import listening_started, listening_stopped
    from agent.speech.model_weights import BUNDLED_PIPER_VOICE
    from mcp_bridge.converse_types import SpeakOptions, UnsupportedOption

    transport = LiveKitTransport(lk_settings(), worker_start_timeout=120)
    try:
        stages = StageLog()
        request = ConverseRequest(
            message="Tell me after the chime.",
            listen=ListenOptions(max_seconds=60, audio_cues=True),
            speak=SpeakOptions(voice=BUNDLED_PIPER_VOICE, speed=1.2),
        )
        called_at = time.monotonic()
        call = asyncio.create_task(transport.converse(request, stages))
        await asyncio.wait_for(stages.listening.wait(), 180)
        started_cue, stopped_cue = listening_started(USER_RATE), listening_stopped(USER_RATE)
        await wait_until(lambda: cue_match(lk_user.heard.samples(called_at), started_cue) > 0.6, 20, "the start cue")
        reply = await synthesize(piper, "Please deploy the release now.")
        spoke_at = time.monotonic()  # the worker is silent while the user speaks: what it sends next is the cue
        await lk_user.speak(reply)
        result = await asyncio.wait_for(call, 120)
        await wait_until(lambda: cue_match(lk_user.heard.samples(spoke_at), stopped_cue) > 0.6, 20, "the stop cue")
        assert result.heard_speech and "deploy" in words(result.text), result.text
        assert result.ignored_options == []

        with pytest.raises(UnsupportedOption) as refused_language:
            await transport.converse(
                ConverseRequest(message="Sprechen Sie Deutsch?", listen=ListenOptions(language="de")), StageLog()
            )
        assert "language" in str(refused_language.value) and "English-only" in str(refused_language.value)

        with pytest.raises(UnsupportedOption) as refused_voice:
            await transport.converse(
                ConverseRequest(message="Hello.", wait_for_response=False, speak=SpeakOptions(voice="zz-no-voice")),
                StageLog(),
            )
        assert "zz-no-voice" in str(refused_voice.value)
    finally:
        await transport.aclose()
