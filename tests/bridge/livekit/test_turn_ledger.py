"""The bridge's copy of announced user turns (`TurnLedger`): a turn whose job died or whose answer was lost is
returned by the next answer, once; a turn returned already is not returned again."""

from __future__ import annotations

from agent.protocol import ConverseOk, Utterance
from mcp_bridge.livekit.turn_ledger import TurnLedger


def answer(*, earlier: list[Utterance] = (), reply: Utterance | None = None, held: list[str] = ()) -> ConverseOk:
    turns = [*earlier, *([reply] if reply else [])]
    return ConverseOk(
        id="call", earlier=list(earlier), reply=reply, heard_speech=bool(turns),
        delivered=[t.id for t in turns], held=list(held),
    )


def texts(settled: ConverseOk) -> list[str]:
    return [t.text for t in settled.earlier] + ([settled.reply.text] if settled.reply else [])


def test_a_turn_held_by_a_job_that_is_gone_is_returned_by_the_next_job_s_answer() -> None:
    ledger = TurnLedger()
    queued = Utterance(text="said while no call waited", received_at=100.0)
    ledger.noticed("job-a", queued)
    assert ledger.holds("said while no call")
    reply = Utterance(text="the reply", received_at=200.0)
    settled, orphaned = ledger.settle("job-b", answer(reply=reply))
    assert orphaned == [queued]
    assert texts(settled) == ["said while no call waited", "the reply"] and settled.heard_speech
    assert ledger.unreturned == 0

    # the old job comes back after all and returns its queue: nothing twice
    again, orphaned = ledger.settle("job-a", answer(earlier=[queued]))
    assert texts(again) == [] and orphaned == [] and not again.heard_speech


def test_turns_the_answering_job_still_holds_wait_for_its_next_call() -> None:
    ledger = TurnLedger()
    later = Utterance(text="came after the answer was built")
    ledger.noticed("job-a", later)
    settled, orphaned = ledger.settle("job-a", answer(held=[later.id]))
    assert orphaned == [] and ledger.unreturned == 1
    settled, orphaned = ledger.settle("job-a", answer(earlier=[later]))
    assert texts(settled) == ["came after the answer was built"] and orphaned == []


def test_a_turn_in_a_lost_answer_is_returned_by_the_next_one() -> None:
    ledger = TurnLedger()
    lost = Utterance(text="answer never arrived")
    ledger.noticed("job-a", lost)  # the job put it into an answer the bridge gave up on; it does not hold it
    settled, orphaned = ledger.settle("job-a", answer())
    assert texts(settled) == ["answer never arrived"] and orphaned == [lost]


def test_the_same_words_heard_by_two_jobs_of_one_room_are_one_turn() -> None:
    ledger = TurnLedger()
    first = Utterance(text="Deploy it", received_at=50.0)
    second_job_copy = Utterance(text="deploy  it", received_at=50.4)
    ledger.noticed("job-a", first)
    ledger.noticed("job-b", second_job_copy)
    settled, _ = ledger.settle("job-a", answer(earlier=[first]))
    assert texts(settled) == ["Deploy it"] and ledger.unreturned == 0
    settled, _ = ledger.settle("job-b", answer(earlier=[second_job_copy]))
    assert texts(settled) == []
    # the same words again a minute later are a new turn
    again = Utterance(text="deploy it", received_at=120.0)
    settled, _ = ledger.settle("job-b", answer(earlier=[again]))
    assert texts(settled) == ["deploy it"]


def test_bounded() -> None:
    ledger = TurnLedger(capacity=3)
    for n in range(5):
        ledger.noticed("job-a", Utterance(text=f"turn {n}"))
    assert ledger.unreturned == 3
