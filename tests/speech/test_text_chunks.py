"""The one splitter of text to speak: parts within the length limit that join back to exactly the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.speech.text_chunks import SYNTHESIS_CHUNK_CHARS, speech_chunks, split_first_clause

texts = st.one_of(
    st.text(max_size=3000),
    st.text(alphabet=st.sampled_from("ab .!?\n…"), max_size=3000),
    st.builds(lambda word, n: word * n, st.sampled_from(["word ", "x", "Hi. ", "長"]), st.integers(0, 2000)),
)


@settings(max_examples=300, deadline=None)
@given(text=texts, limit=st.integers(1, 600), combine=st.booleans())
def test_parts_fit_the_limit_and_join_to_the_text(text: str, limit: int, combine: bool) -> None:
    parts = speech_chunks(text, limit, combine=combine)
    assert "".join(parts) == text
    assert all(0 < len(part) <= limit for part in parts)


def test_sentences_stay_whole_when_they_fit_and_long_ones_are_cut_at_spaces() -> None:
    assert speech_chunks("Hello there. How are you? Fine.", 400, combine=False) == [
        "Hello there.", " How are you?", " Fine.",
    ]
    assert speech_chunks("Hello there. How are you? Fine.", 400) == ["Hello there. How are you? Fine."]
    unpunctuated = "word " * 20_000  # 100 kB with no sentence end: what once made Piper ask for 229 GB
    parts = speech_chunks(unpunctuated, SYNTHESIS_CHUNK_CHARS, combine=False)
    assert max(len(p) for p in parts) <= SYNTHESIS_CHUNK_CHARS
    assert all(p.rstrip().endswith("word") for p in parts if p.strip())  # cut between words, not inside one


@settings(max_examples=300, deadline=None)
@given(text=texts, limit=st.integers(1, 600))
def test_cutting_the_first_clause_loses_and_repeats_nothing(text: str, limit: int) -> None:
    parts = split_first_clause(speech_chunks(text, limit, combine=False))
    assert "".join(parts) == text
    assert all(0 < len(part) <= limit for part in parts)


def test_a_long_first_sentence_is_cut_after_its_first_clause_and_nothing_else_is() -> None:
    text = "Before I open anything, tell me which file you mean. Is it the configuration, or the tests?"
    assert split_first_clause(speech_chunks(text, 400, combine=False)) == [
        "Before I open anything,", " tell me which file you mean.", " Is it the configuration, or the tests?",
    ]
    assert split_first_clause(["Yes, that is the file I meant to open first today."]) == [
        "Yes, that is the file I meant to open first today."  # "Yes," alone is too short to be worth a cut
    ]
    assert split_first_clause(["Which file should I open first?"]) == ["Which file should I open first?"]
    assert split_first_clause(["Which file should I open first, the configuration file or the tests?"]) == [
        "Which file should I open first,", " the configuration file or the tests?",
    ]
