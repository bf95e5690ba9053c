"""The worker's audio path without a room: one Silero stream per session cuts the segments the STT transcribes,
and the end-of-turn detector adapter answers livekit's streaming turn-detector interface.

Real Silero VAD, real faster-whisper, real Piper speech; the frames are fed at 16 kHz in 50 ms frames (what the
worker's RoomIO delivers), as fast as the VAD takes them.
"""

from __future__ import annotations

import asyncio

import jiwer
import numpy as np
from livekit import rtc
from livekit.agents import stt, vad
from livekit.agents.voice import io
from livekit.agents.voice.turn import _StreamingTurnDetector

from agent.config import Settings
from agent.protocol import Utterance
from agent.room_session import build_room_session
from agent.segment_stt import transcribe_segments
from agent.speech import FasterWhisperSTT, PiperTTS, build_room_vad
from agent.speech.audio import resample_int16
from agent.speech.vad_tap import TappedVAD, VADListener
from agent.turn_detector import AudioTurnDetector
from agent.turn_taking import PAUSE_MS, RoomTurns, endpointing
from agent.voice_agent import VoiceMcpAgent
from tests.speech_fixtures import clean_settings

RATE = 16000
FRAME = RATE // 20


def words(text: str) -> list[str]:
    return jiwer.RemovePunctuation()(text.lower()).split()


BEFORE_THE_PAUSE = {"could", "move", "meeting"}
AFTER_THE_PAUSE = {"thursday", "afternoon", "instead"}
"""Content words of the two parts of the reply the session tests speak (Piper's voice varies from one synthesis
to the next, and Whisper tiny.en now and then mishears one word of a short segment: 'the mating tube')."""


def heard(text: str, expected: set[str]) -> bool:
    """All but at most one of `expected` are in `text`: the segment was transcribed, one misheard word allowed."""
    return len(expected & set(words(text))) >= len(expected) - 1


async def speech_16k(piper: PiperTTS, text: str) -> np.ndarray:
    frame = await piper.synthesize(text).collect()
    return resample_int16(np.frombuffer(frame.data, dtype=np.int16), frame.sample_rate, RATE)


def frames(samples: np.ndarray) -> list[rtc.AudioFrame]:
    padded = np.concatenate([samples, np.zeros(-samples.size % FRAME, dtype=np.int16)])
    return [rtc.AudioFrame(padded[i : i + FRAME].tobytes(), RATE, 1, FRAME) for i in range(0, padded.size, FRAME)]


class CountingVAD(vad.VAD):
    """The real Silero VAD, counting the streams opened on it."""

    def __init__(self, inner: vad.VAD) -> None:
        super().__init__(capabilities=inner.capabilities)
        self.inner = inner
        self.streams = 0

    def stream(self) -> vad.VADStream:
        self.streams += 1
        return self.inner.stream()


async def test_each_pause_closes_a_segment_that_is_transcribed_from_the_sessions_only_vad_stream(
    whisper: FasterWhisperSTT, piper: PiperTTS
) -> None:
    first = await speech_16k(piper, "We could move the meeting to")
    second = await speech_16k(piper, "Thursday afternoon instead.")
    pause = np.zeros(int(RATE * 1.0), dtype=np.int16)
    audio = np.concatenate([np.zeros(RATE // 2, dtype=np.int16), first, pause, second, pause])

    room_vad = CountingVAD(build_room_vad(clean_settings(), silence_ms=PAUSE_MS))
    segments = TappedVAD(room_vad)
    session_stream = segments.stream()  # what the AgentSession opens
    session_events: list[vad.VADEventType] = []
    stt_audio: asyncio.Queue[rtc.AudioFrame | None] = asyncio.Queue()

    async def audio_for_stt():  # the copy of the audio livekit hands the STT node
        while (frame := await stt_audio.get()) is not None:
            yield frame

    async def session_reads_its_vad() -> None:
        async for event in session_stream:
            session_events.append(event.type)

    transcripts: list[str] = []
    both_transcribed = asyncio.Event()
    ends_of_speech = 0

    async def stt_node() -> None:
        nonlocal ends_of_speech
        async for event in transcribe_segments(audio_for_stt(), segments=segments, recognizer=whisper):
            if event.type == stt.SpeechEventType.END_OF_SPEECH:
                ends_of_speech += 1
            if event.type == stt.SpeechEventType.FINAL_TRANSCRIPT:
                transcripts.append(event.alternatives[0].text)
                if len(transcripts) == 2:
                    both_transcribed.set()

    reader = asyncio.create_task(session_reads_its_vad())
    node = asyncio.create_task(stt_node())
    for frame in frames(audio):
        session_stream.push_frame(frame)
        stt_audio.put_nowait(frame)
        await asyncio.sleep(0)
    session_stream.end_input()
    await asyncio.wait_for(reader, 120)
    await asyncio.wait_for(both_transcribed.wait(), 120)
    stt_audio.put_nowait(None)  # the session's audio ends: the node ends too
    await asyncio.wait_for(node, 30)
    await session_stream.aclose()

    assert room_vad.streams == 1, "the STT must not open a VAD stream of its own"
    assert session_events.count(vad.VADEventType.END_OF_SPEECH) == 2 == ends_of_speech
    assert len(transcripts) == 2, transcripts
    assert heard(transcripts[0], BEFORE_THE_PAUSE) and heard(transcripts[1], AFTER_THE_PAUSE), transcripts


def test_the_turn_detector_adapter_is_what_livekit_drives_as_an_audio_turn_detector() -> None:
    detector = AudioTurnDetector(lambda audio: 1.0, model="test")
    assert isinstance(detector, _StreamingTurnDetector)


async def test_the_detector_decides_on_the_turns_audio_and_a_failing_model_answers_not_done_once() -> None:
    seen: list[np.ndarray] = []
    failures: list[Exception] = []

    def decide(audio: np.ndarray) -> float:
        seen.append(audio)
        if len(seen) > 1:
            raise RuntimeError("model broke")
        return 0.9

    detector = AudioTurnDetector(decide, model="test", on_failure=failures.append)
    stream = detector.stream()
    tone = (np.sin(np.arange(RATE) / RATE * 2 * np.pi * 220) * 8000).astype(np.int16)
    for frame in frames(tone):
        stream.push_audio(frame)
    done = await asyncio.wait_for(stream.predict(), 10)
    assert done.end_of_turn_probability == 0.9
    assert seen[0].dtype == np.float32 and seen[0].size == RATE and 0.2 < float(np.abs(seen[0]).max()) <= 1.0

    stream.flush("turn committed")
    failed = await asyncio.wait_for(stream.predict(), 10)
    assert seen[1].size == 0  # the next turn starts from fresh audio
    assert failed.end_of_turn_probability == 0.0 < await stream.unlikely_threshold(None)  # "not done"
    assert [str(f) for f in failures] == ["model broke"] and detector.failed
    assert not await stream.supports_language(None)  # livekit stops asking a failed model
    await stream.aclose()


def test_the_silence_rule_ends_the_turn_after_silence_ms_and_the_model_rule_waits_up_to_the_longer_bound() -> None:
    silence = endpointing("silence", silence_ms=1200, max_turn_silence_ms=3000)
    assert silence["min_delay"] == silence["max_delay"] == 1.2
    model = endpointing("model", silence_ms=1200, max_turn_silence_ms=3000)
    assert model["min_delay"] == PAUSE_MS / 1000 and model["max_delay"] == 3.0

    no_model = RoomTurns(clean_settings(), model=None)
    assert no_model.rule == "silence" and no_model.turn_handling(barge_in=True)["turn_detection"] == "vad"


class FramesIn(io.AudioInput):
    """Audio input for an AgentSession: the frames put in `queue`, in real time (50 ms frames at 16 kHz)."""

    def __init__(self) -> None:
        super().__init__(label="test")
        self.queue: asyncio.Queue[rtc.AudioFrame] = asyncio.Queue()

    async def __anext__(self) -> rtc.AudioFrame:
        return await self.queue.get()


class TurnCollector:
    """The converse service's side of `VoiceMcpAgent` in these tests: keeps every turn the session commits."""

    def __init__(self) -> None:
        self.turns: list[Utterance] = []
        self.committed = asyncio.Event()

    def on_user_turn(self, utterance: Utterance) -> bool:
        self.turns.append(utterance)
        self.committed.set()
        return True


async def run_worker_session(
    audio: np.ndarray,
    settings: Settings,
    recognizer: stt.STT,
    tts: PiperTTS,
    *,
    silence_after: float,
    on_vad: VADListener | None = None,
) -> list[Utterance]:
    """The real worker session (`build_room_session`, `VoiceMcpAgent`) fed `audio`, then `silence_after` seconds of
    silence, in real time (endpointing counts wall-clock silence); the turns it committed by the first commit.
    `on_vad` sees every event of the session's VAD."""
    room_session = build_room_session(
        settings, vad=build_room_vad(settings, silence_ms=PAUSE_MS), stt=recognizer, tts=tts, llm=None
    )
    if on_vad is not None:
        room_session.segments.subscribe(on_vad)
    service = TurnCollector()
    audio_in = FramesIn()
    session = room_session.session
    session.input.audio = audio_in
    agent = VoiceMcpAgent(service, llm_enabled=False, segments=room_session.segments)  # type: ignore[arg-type]
    await session.start(agent, record=False)
    try:
        for frame in [*frames(audio), *frames(np.zeros(int(RATE * silence_after), dtype=np.int16))]:
            audio_in.queue.put_nowait(frame)
            await asyncio.sleep(frame.duration)
        await asyncio.wait_for(service.committed.wait(), 120)
        await asyncio.sleep(0)  # a second turn committed in the same breath would show here
    finally:
        await session.aclose()
    return service.turns


async def test_the_worker_session_commits_one_turn_with_every_segment_of_a_reply_with_a_pause(
    whisper: FasterWhisperSTT, piper: PiperTTS
) -> None:
    """The real worker session (`build_room_session`, `VoiceMcpAgent`), fed audio without a room: a reply with a
    1.5 s pause under a 2.5 s silence rule is one turn whose text has the words before and after the pause."""
    first = await speech_16k(piper, "We could move the meeting to")
    second = await speech_16k(piper, "Thursday afternoon instead.")
    pause = np.zeros(int(RATE * 1.5), dtype=np.int16)
    audio = np.concatenate([np.zeros(RATE // 2, dtype=np.int16), first, pause, second])

    settings = clean_settings(silence_ms=2500, turn_detection="silence")
    turns = await run_worker_session(audio, settings, whisper, piper, silence_after=4.0)

    assert len(turns) == 1, [t.text for t in turns]
    assert heard(turns[0].text, BEFORE_THE_PAUSE) and heard(turns[0].text, AFTER_THE_PAUSE), turns[0].text


async def test_the_detector_asks_again_during_the_pause_and_defers_to_a_transcript_that_stops_mid_sentence() -> None:
    answers = iter([0.1, 0.2, 0.9])
    detector = AudioTurnDetector(lambda audio: next(answers), model="test")
    detector.max_wait = 3.0
    stream = detector.stream()
    for frame in frames(np.zeros(RATE, dtype=np.int16)):
        stream.push_audio(frame)
    event = await asyncio.wait_for(stream.predict(), 10)
    assert event.end_of_turn_probability == 0.9  # "not done" twice, then "done" half a second apart each
    assert stream.prediction_timeout > detector.max_wait  # a slow decision is waited for, never taken as "done"

    assert await stream.unlikely_threshold("en") == detector.threshold
    detector.heard("We could move the meeting to.")
    assert await stream.unlikely_threshold("en") > 1.0  # no probability ends a turn that stops on "to"
    stream.flush("turn committed")
    assert await stream.unlikely_threshold("en") == detector.threshold
    await stream.aclose()
