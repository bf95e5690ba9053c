"""Does the transcript so far stop where no sentence can end? The end-of-turn model's second opinion, from text.

Smart Turn judges the *sound* of the end of speech. On a thinking pause after an open phrase ("we could move the
meeting to …") it can hear a finished sentence: a flat or falling voice — and every TTS voice, which the tests
and the benchmark speak with, ends each input that way. The words say otherwise: an English sentence does not end
on "to", "the", "and" or "um". Both paths transcribe the speech in the user's pauses anyway (the local loop's
early transcription, the worker's segment STT), so the text of the speech before a pause is known about when the
model has answered, and converse could not return before it in any case: asking it costs no time.

`ends_open(text, language)` is True when the text ends on such a word (or on a comma, a dash or an ellipsis): the
turn is then treated as unfinished whatever the model said, and ends only after the long silence bound. The list
is short on purpose: a wrong "open" costs a wait (the bound), a wrong "finished" cuts the user off, but words that
often end a reply ("on", "in", "up", "it", "that", "be", "can", modal verbs) are left out. English only (the
default STT, Whisper tiny.en, is English); other languages rely on the model alone.
"""

from __future__ import annotations

import re

OPEN_ENDINGS: frozenset[str] = frozenset(
    {
        # articles and possessives that need a noun
        "a", "an", "the", "my", "your", "our", "their", "its",
        # conjunctions that need a clause
        "and", "or", "but", "nor", "because", "than", "if", "whether",
        # prepositions that need an object (not the ones that end phrasal verbs: on, in, up, out, off, over)
        "to", "of", "for", "with", "from", "into", "onto", "at", "by", "about", "between", "towards", "toward",
        "via", "per",
        # hesitation
        "um", "uh", "uhm", "umm", "erm", "er", "hmm", "mm",
    }
)
"""Words an English turn does not end on."""

_OPEN_PUNCTUATION = re.compile(r"(,|-|–|—|\.\.\.|…)\s*$")
_WORD = re.compile(r"[a-z']+")


def ends_open(text: str, language: str | None = None) -> bool:
    """True when `text` (a transcript of the speech so far) stops mid-sentence (see the module docstring)."""
    if language is not None and not language.lower().startswith("en"):
        return False
    stripped = text.strip()
    if not stripped:
        return False
    if _OPEN_PUNCTUATION.search(stripped):
        return True
    words = _WORD.findall(stripped.lower())
    return bool(words) and words[-1] in OPEN_ENDINGS
