"""Unit tests of the worker's converse logic (queueing and ordering of user turns) with a fake session.

Nothing here sleeps to order events: the tests wait for the stage the service reports (`Stages.reached`).
"""

from __future__ import annotations

import asyncio

import pytest

from agent.converse_service import ConverseService, Cue, OptionsRefused, SpeakOutcome
from agent.protocol import (
    ConverseCall,
    ConverseFailed,
    ConverseOk,
    ListenOptions,
    OptionName,
    Progress,
    SpeakOptions,
    Utterance,
)


class FakePort:
    def __init__(self, *, user: str | None = "user") -> None:
        self.user = user
        self.spoken: list[str] = []
        self.speaking = False
        self.during_speech: list[Utterance] = []
        self.service: ConverseService | None = None
        self.release_speech: asyncio.Event | None = None
        """When set, speaking lasts until this event is set."""
        self.tuned: list[tuple[int, int | None]] = []
        self.options: list[tuple[SpeakOptions, str | None]] = []
        self.restored = 0
        self.cues: list[Cue] = []
        self.refuse: OptionsRefused | None = None
        self.ignore: list[OptionName] = []

    async def speak(self, text: str, *, allow_interruptions: bool, within: float) -> SpeakOutcome:
        self.spoken.append(text)
        if self.release_speech is not None:
            await self.release_speech.wait()
        for turn in self.during_speech:
            assert self.service is not None
            self.service.on_user_turn(turn)
        return SpeakOutcome(interrupted=bool(self.during_speech), first_audio_s=0.001, speak_s=0.01)

    def tune_listening(self, silence_ms: int, vad_aggressiveness: int | None) -> None:
        self.tuned.append((silence_ms, vad_aggressiveness))

    def apply_options(self, speak: SpeakOptions, language: str | None) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.options.append((speak, language))

    def ignored_options(self, *, spoke: bool, transcribed: bool) -> list[OptionName]:
        return list(self.ignore) if spoke else []

    def restore_options(self) -> None:
        self.restored += 1

    def play_cue(self, cue: Cue) -> None:
        self.cues.append(cue)

    def user_speaking(self) -> bool:
        return self.speaking

    def user_identity(self) -> str | None:
        return self.user


class Stages:
    """The progress packets the service sent; `reached(stage)` waits for one."""

    def __init__(self) -> None:
        self.packets: list[Progress] = []
        self._events: dict[str, asyncio.Event] = {}

    async def __call__(self, caller: str, packet: Progress) -> None:
        self.packets.append(packet)
        self._event(packet.stage).set()

    def _event(self, stage: str) -> asyncio.Event:
        return self._events.setdefault(stage, asyncio.Event())

    async def reached(self, stage: str) -> None:
        await asyncio.wait_for(self._event(stage).wait(), 10)


def make(port: FakePort, llm: str | None = None) -> tuple[ConverseService, Stages]:
    stages = Stages()
    service = ConverseService(port, agent_name="voice-mcp", progress=stages, llm=llm)
    port.service = service
    return service, stages


def call(message: str = "hello", **listen: float) -> ConverseCall:
    return ConverseCall(message=message, listen=ListenOptions(min_seconds=0, **listen))


async def test_reply_after_the_message_is_returned() -> None:
    port = FakePort()
    service, progress = make(port)
    task = asyncio.create_task(service.converse(call("What now?"), "bridge"))
    await progress.reached("listening")
    assert service.on_user_turn(Utterance(text="run the tests")) is True  # claimed by the waiting call
    result = await task
    assert isinstance(result, ConverseOk)
    assert result.reply is not None and result.reply.text == "run the tests"
    assert result.earlier == [] and result.heard_speech and result.ended_by == "silence"
    assert port.spoken == ["What now?"]
    stages = [p.stage for p in progress.packets]
    assert [s for s in dict.fromkeys(stages) if s != "received"] == ["speaking", "listening"]
    assert [p.seq for p in progress.packets] == sorted(p.seq for p in progress.packets)
    assert port.cues == ["listening_started", "listening_stopped"]


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
    service, stages = make(FakePort())
    c = ConverseCall(message="go", listen=ListenOptions(max_seconds=0.6, min_seconds=0, silence_detection=False))
    task = asyncio.create_task(service.converse(c, "bridge"))
    await stages.reached("listening")
    service.on_user_turn(Utterance(text="one"))
    service.on_user_turn(Utterance(text="two"))
    result = await task
    assert isinstance(result, ConverseOk) and result.reply is not None
    assert result.reply.text == "one two" and result.ended_by == "max_duration"


async def test_no_user_and_busy_are_typed_failures() -> None:
    service, _ = make(FakePort(user=None))
    failed = await service.converse(call(), "bridge")
    assert isinstance(failed, ConverseFailed) and failed.code == "no_user"

    service, stages = make(FakePort())
    first = asyncio.create_task(service.converse(call(max_seconds=0.5), "bridge"))
    await stages.reached("listening")
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
    from agent.speech.text_chunks import SYNTHESIS_CHUNK_CHARS, speech_chunks
    from agent.voice_agent import speech_parts

    text = " ".join(f"Sentence number {i} is here." for i in range(400))
    parts = speech_parts(text, limit=500)
    assert len(parts) > 1 and "".join(parts) == text
    assert all(len(p) <= 500 for p in parts)
    assert all(p.rstrip().endswith(".") for p in parts)
    assert speech_parts("One short message.") == ["One short message."]
    # one split for both paths: the worker's parts are the local loop's sentences, packed together
    local = speech_chunks(text, SYNTHESIS_CHUNK_CHARS, combine=False)
    assert "".join(local) == text and {s.strip() for s in local} == {
        s.strip() for p in parts for s in speech_chunks(p, SYNTHESIS_CHUNK_CHARS, combine=False)
    }


async def test_a_cancelled_call_puts_undelivered_turns_back_in_order() -> None:
    port = FakePort()
    port.release_speech = asyncio.Event()  # speaks until cancelled
    service, stages = make(port)
    service.on_user_turn(Utterance(text="queued before"))
    task = asyncio.create_task(service.converse(ConverseCall(message="hi", listen=ListenOptions(max_seconds=1)), "b"))
    await stages.reached("speaking")
    # "queued before" was taken by the call; cancelling it must not lose it
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert service.queued == 1 and port.restored == 1
    service.on_user_turn(Utterance(text="said after"))
    port.release_speech = None
    result = await service.converse(call("next"), "bridge")
    assert isinstance(result, ConverseOk)
    assert [u.text for u in result.earlier] == ["queued before", "said after"]


async def test_listening_is_tuned_per_call_and_restored_afterwards() -> None:
    port = FakePort()
    service, _ = make(port)
    c = ConverseCall(message="hi", listen=ListenOptions(max_seconds=0.2, silence_ms=700, vad_aggressiveness=3))
    await service.converse(c, "bridge")
    assert port.tuned == [(700, 3), (1000, 2)]  # the call's values, then the worker's defaults


async def test_the_calls_voice_speed_and_language_reach_the_session_and_are_restored() -> None:
    port = FakePort()
    service, _ = make(port)
    fast = ConverseCall(
        message="fast", wait_for_response=False, speak=SpeakOptions(voice="en-gb", speed=1.5),
        listen=ListenOptions(language="de"),
    )
    await service.converse(fast, "b")
    await service.converse(ConverseCall(message="normal", wait_for_response=False), "b")
    assert port.options == [(SpeakOptions(voice="en-gb", speed=1.5), "de"), (SpeakOptions(), None)]
    assert port.restored == 2


async def test_an_option_no_provider_can_take_is_refused_before_speaking_and_keeps_queued_turns() -> None:
    port = FakePort()
    port.refuse = OptionsRefused("no configured provider can take voice='x'", "leave voice out")
    service, _ = make(port)
    service.on_user_turn(Utterance(text="said before"))
    failed = await service.converse(ConverseCall(message="hi", speak=SpeakOptions(voice="x")), "b")
    assert isinstance(failed, ConverseFailed) and failed.code == "unsupported_option"
    assert "voice" in failed.message and failed.hint == "leave voice out"
    assert port.spoken == [] and service.queued == 1


async def test_options_the_serving_provider_could_not_honour_are_reported() -> None:
    port = FakePort()
    port.ignore = ["voice"]
    service, _ = make(port)
    result = await service.converse(ConverseCall(message="hi", wait_for_response=False), "b")
    assert isinstance(result, ConverseOk) and result.ignored_options == ["voice"]


async def test_cues_are_played_only_when_the_call_asks_for_them() -> None:
    port = FakePort()
    service, _ = make(port)
    await service.converse(ConverseCall(message="hi", listen=ListenOptions(max_seconds=0.1, audio_cues=False)), "b")
    assert port.cues == []
    await service.converse(ConverseCall(message="hi", listen=ListenOptions(max_seconds=0.1)), "b")
    assert port.cues == ["listening_started", "listening_stopped"]


async def test_every_turn_is_announced_and_answers_list_what_they_carry_and_what_is_held() -> None:
    announced: list[str] = []
    port = FakePort()
    stages = Stages()
    service = ConverseService(
        port, agent_name="voice-mcp", progress=stages, announce=lambda turn: announced.append(turn.text)
    )
    port.service = service
    queued = Utterance(text="said before the call")
    service.on_user_turn(queued)
    task = asyncio.create_task(service.converse(ConverseCall(message="FYI", wait_for_response=False), "bridge"))
    result = await task
    assert isinstance(result, ConverseOk) and result.delivered == [queued.id] and result.held == []

    later = Utterance(text="said between calls")
    service.on_user_turn(later)
    listening = asyncio.create_task(service.converse(call("And?"), "bridge"))
    answer = await listening  # returns the queued turn at once
    assert isinstance(answer, ConverseOk) and answer.delivered == [later.id]

    waiting = asyncio.create_task(service.converse(call("Next?"), "bridge"))
    await stages.reached("listening")
    one, two = Utterance(text="one"), Utterance(text="two")
    port.speaking = True  # the user goes on: both parts end up in one reply
    service.on_user_turn(one)
    service.on_user_turn(two)
    port.speaking = False
    reply = await waiting
    assert isinstance(reply, ConverseOk) and reply.reply is not None and reply.reply.id == one.id
    assert reply.delivered == [one.id, two.id]
    assert announced == ["said before the call", "said between calls", "one", "two"]
