"""Unit tests of the worker's converse logic (queueing and ordering of user turns) with a fake session."""

from __future__ import annotations

import asyncio

import pytest

from agent.converse_service import ConverseService, SpeakOutcome
from agent.protocol import ConverseCall, ConverseFailed, ConverseOk, ListenParams, Progress, Utterance


class FakePort:
    def __init__(self, *, user: str | None = "user") -> None:
        self.user = user
        self.spoken: list[str] = []
        self.speaking = False
        self.during_speech: list[Utterance] = []
        self.service: ConverseService | None = None
        self.speak_seconds = 0.01
        self.tuned: list[tuple[int, int | None]] = []
        self.speeds: list[float | None] = []

    async def speak(
        self, text: str, *, allow_interruptions: bool, within: float, speed: float | None = None
    ) -> SpeakOutcome:
        self.spoken.append(text)
        self.speeds.append(speed)
        await asyncio.sleep(self.speak_seconds)
        for turn in self.during_speech:
            assert self.service is not None
            self.service.on_user_turn(turn)
        return SpeakOutcome(interrupted=bool(self.during_speech), first_audio_s=0.001, speak_s=0.01)

    def tune_listening(self, silence_ms: int, vad_aggressiveness: int | None) -> None:
        self.tuned.append((silence_ms, vad_aggressiveness))

    def user_speaking(self) -> bool:
        return self.speaking

    def user_identity(self) -> str | None:
        return self.user


def make(port: FakePort, llm: str | None = None) -> tuple[ConverseService, list[Progress]]:
    sent: list[Progress] = []

    async def sink(caller: str, packet: Progress) -> None:
        sent.append(packet)

    service = ConverseService(port, agent_name="voice-mcp", progress=sink, llm=llm)
    port.service = service
    return service, sent


def call(message: str = "hello", **listen: float) -> ConverseCall:
    return ConverseCall(message=message, listen=ListenParams(min_seconds=0, **listen))


async def test_reply_after_the_message_is_returned() -> None:
    port = FakePort()
    service, progress = make(port)
    task = asyncio.create_task(service.converse(call("What now?"), "bridge"))
    await asyncio.sleep(0.1)
    assert service.on_user_turn(Utterance(text="run the tests")) is True  # claimed by the waiting call
    result = await task
    assert isinstance(result, ConverseOk)
    assert result.reply is not None and result.reply.text == "run the tests"
    assert result.earlier == [] and result.heard_speech and result.ended_by == "silence"
    assert port.spoken == ["What now?"]
    stages = [p.stage for p in progress]
    assert list(dict.fromkeys(stages)) == ["speaking", "listening"]
    assert [p.seq for p in progress] == sorted(p.seq for p in progress)


async def test_turns_without_a_waiting_call_are_queued_in_order_and_delivered_next() -> None:
    port = FakePort()
    service, _ = make(port)
    assert service.on_user_turn(Utterance(text="first")) is False
    assert service.on_user_turn(Utterance(text="second")) is False
    assert service.queued == 2
    result = await service.converse(call("Anything else?"), "bridge")
    assert isinstance(result, ConverseOk)
    assert [u.text for u in result.earlier] == ["first", "second"]
    assert result.heard_speech and result.ended_by == "queued"
    assert port.spoken == ["Anything else?"]  # the message is still spoken
    assert service.queued == 0


async def test_a_turn_spoken_over_the_message_is_its_reply() -> None:
    port = FakePort()
    port.during_speech = [Utterance(text="stop, I know")]
    service, _ = make(port)
    result = await service.converse(call("A long explanation"), "bridge")
    assert isinstance(result, ConverseOk)
    assert result.reply is not None and result.reply.text == "stop, I know" and result.interrupted


async def test_not_waiting_keeps_turns_spoken_during_the_message_for_later() -> None:
    port = FakePort()
    port.during_speech = [Utterance(text="noted")]
    service, _ = make(port)
    result = await service.converse(ConverseCall(message="FYI", wait_for_response=False), "bridge")
    assert isinstance(result, ConverseOk) and result.ended_by == "not_waiting" and result.reply is None
    assert service.queued == 1


async def test_silence_ends_with_max_duration_and_no_speech() -> None:
    service, _ = make(FakePort())
    result = await service.converse(call(max_seconds=0.3), "bridge")
    assert isinstance(result, ConverseOk)
    assert result.reply is None and not result.heard_speech and result.ended_by == "max_duration"


async def test_without_silence_detection_all_turns_until_max_are_joined() -> None:
    service, _ = make(FakePort())
    c = ConverseCall(message="go", listen=ListenParams(max_seconds=0.6, min_seconds=0, silence_detection=False))
    task = asyncio.create_task(service.converse(c, "bridge"))
    await asyncio.sleep(0.1)
    service.on_user_turn(Utterance(text="one"))
    await asyncio.sleep(0.1)
    service.on_user_turn(Utterance(text="two"))
    result = await task
    assert isinstance(result, ConverseOk) and result.reply is not None
    assert result.reply.text == "one two" and result.ended_by == "max_duration"


async def test_no_user_and_busy_are_typed_failures() -> None:
    service, _ = make(FakePort(user=None))
    failed = await service.converse(call(), "bridge")
    assert isinstance(failed, ConverseFailed) and failed.code == "no_user"

    service, _ = make(FakePort())
    first = asyncio.create_task(service.converse(call(max_seconds=0.5), "bridge"))
    await asyncio.sleep(0.05)
    second = await service.converse(call(), "bridge")
    assert isinstance(second, ConverseFailed) and second.code == "busy"
    await first


async def test_with_an_llm_unclaimed_turns_are_marked_answered_and_still_delivered() -> None:
    service, _ = make(FakePort(), llm="local-llm")
    assert service.on_user_turn(Utterance(text="what's the time")) is False
    result = await service.converse(call(), "bridge")
    assert isinstance(result, ConverseOk)
    assert [(u.text, u.answered_by_llm) for u in result.earlier] == [("what's the time", True)]


async def test_empty_turns_are_ignored() -> None:
    service, _ = make(FakePort())
    assert service.on_user_turn(Utterance(text="   ")) is False
    assert service.queued == 0


def test_long_messages_are_spoken_in_sentence_parts_that_join_to_the_original() -> None:
    from agent.voice_agent import speech_parts

    text = " ".join(f"Sentence number {i} is here." for i in range(400))
    parts = speech_parts(text, limit=500)
    assert len(parts) > 1 and "".join(parts) == text
    assert all(len(p) <= 500 for p in parts)
    assert all(p.rstrip().endswith(".") for p in parts)
    assert speech_parts("One short message.") == ["One short message."]


async def test_a_cancelled_call_puts_undelivered_turns_back_in_order() -> None:
    port = FakePort()
    port.speak_seconds = 2.0
    service, _ = make(port)
    service.on_user_turn(Utterance(text="queued before"))
    task = asyncio.create_task(service.converse(ConverseCall(message="hi", listen=ListenParams(max_seconds=1)), "b"))
    await asyncio.sleep(0.05)
    # "queued before" was taken by the call; cancelling it must not lose it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert service.queued == 1
    service.on_user_turn(Utterance(text="said after"))
    port.speak_seconds = 0.01
    result = await service.converse(call("next"), "bridge")
    assert isinstance(result, ConverseOk)
    assert [u.text for u in result.earlier] == ["queued before", "said after"]


async def test_listening_is_tuned_per_call_and_restored_afterwards() -> None:
    port = FakePort()
    service, _ = make(port)
    c = ConverseCall(message="hi", listen=ListenParams(max_seconds=0.2, silence_ms=700, vad_aggressiveness=3))
    await service.converse(c, "bridge")
    assert port.tuned == [(700, 3), (1000, 2)]  # the call's values, then the worker's defaults


async def test_the_calls_speaking_rate_reaches_the_session() -> None:
    from agent.protocol import SpeakParams

    port = FakePort()
    service, _ = make(port)
    await service.converse(ConverseCall(message="fast", wait_for_response=False, speak=SpeakParams(speed=1.5)), "b")
    await service.converse(ConverseCall(message="normal", wait_for_response=False), "b")
    assert port.speeds == [1.5, None]
