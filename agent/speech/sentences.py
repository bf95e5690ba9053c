"""How a message is cut for speaking — one way for both paths.

`sentences()` is livekit-agents' basic sentence tokenizer (it knows abbreviations such as "e.g." and "Dr."); the
local loop synthesises sentence by sentence, so the first one plays while the next is being synthesised.
`speech_parts()` groups those sentences into parts of about `limit` characters for the worker's `session.say()`:
livekit-agents' transcript synchronizer re-measures the pending text for every word it releases, which is
quadratic in the length of one `say()` — a 50 kB message in one piece would stall the worker for minutes.
"""

from __future__ import annotations

from livekit.agents import tokenize

SPEECH_PART_CHARS = 1500

_tokenizer = tokenize.basic.SentenceTokenizer()


def sentences(text: str) -> list[str]:
    """The sentences of `text`, stripped; the whole text when it has no sentence end; [] when it is blank."""
    found = [s.strip() for s in _tokenizer.tokenize(text) if s.strip()]
    return found or ([text.strip()] if text.strip() else [])


def speech_parts(text: str, limit: int = SPEECH_PART_CHARS) -> list[str]:
    """`sentences(text)` joined into parts of at most about `limit` characters (a longer sentence stays whole)."""
    parts: list[str] = []
    for sentence in sentences(text):
        if parts and len(parts[-1]) + 1 + len(sentence) <= limit:
            parts[-1] = f"{parts[-1]} {sentence}"
        else:
            parts.append(sentence)
    return parts
