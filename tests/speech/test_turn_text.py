"""The transcript check beside the end-of-turn model: which texts stop mid-sentence (pure logic)."""

from __future__ import annotations

import pytest

from agent.speech.turn_text import ends_open


@pytest.mark.parametrize(
    "text",
    ["We could move the meeting to.", "I think the best option is, um,", "Send it to the", "Bread and",
     "Let me see, the file I want is,", "Put it on my..."],
)
def test_a_transcript_that_stops_mid_sentence_is_open(text: str) -> None:
    assert ends_open(text)


@pytest.mark.parametrize(
    "text",
    ["Please open the configuration file.", "Thursday afternoon instead.", "Come in.", "I can.", "Me too.", ""],
)
def test_a_finished_sentence_is_not_open(text: str) -> None:
    assert not ends_open(text)


def test_other_languages_are_left_to_the_model() -> None:
    assert ends_open("move it to", "en-US") and not ends_open("move it to", "de")
