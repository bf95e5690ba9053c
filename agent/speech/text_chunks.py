"""Cutting text to be spoken into parts a TTS call can take: at sentence ends, and by length as well.

A TTS engine synthesises one request in one go: Piper's buffers grow with the length of one sentence (a 100 kB
message without punctuation asked for 229 GB), and livekit-agents' transcript synchronizer costs quadratic time in
the length of one `say()`. Every part made here has at most `limit` characters, and joined the parts are exactly the
original text, so nothing said is lost or repeated.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

SENTENCE_END = re.compile(r"(?<=[.!?…])(?=\s)")

SYNTHESIS_CHUNK_CHARS = 400
"""Longest text the local loop hands one TTS call (about 25 s of speech; a sentence is usually far shorter)."""

CLAUSE_END = re.compile(r"(?<=[,;:—–])(?=\s)")
FIRST_CLAUSE_FROM = 40
"""A first part at least this long is cut at its first clause end (see `split_first_clause`)."""
CLAUSE_MIN_CHARS = 12
"""Shortest clause cut off on its own: shorter ones ("Yes,") stay with what follows."""


def speech_chunks(text: str, limit: int, *, combine: bool = True) -> list[str]:
    """`text` cut into parts of at most `limit` characters whose concatenation is `text`.

    Cuts fall at sentence ends; a sentence longer than `limit` is cut at its last whitespace that fits, and a word
    longer than `limit` at `limit`. `combine=True` packs consecutive sentences into parts of up to `limit`
    characters (few, large parts); `combine=False` gives each sentence (or piece of one) its own part, so the first
    part is short and its audio comes soon."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    if len(text) <= limit and (combine or not SENTENCE_END.search(text)):
        return [text] if text else []
    parts: list[str] = []
    current = ""
    for sentence in SENTENCE_END.split(text):
        for piece in _pieces(sentence, limit):
            if not combine:
                parts.append(piece)
                continue
            if current and len(current) + len(piece) > limit:
                parts.append(current)
                current = ""
            current += piece
    if current:
        parts.append(current)
    return parts


def _pieces(sentence: str, limit: int) -> Iterator[str]:
    while len(sentence) > limit:
        cut = next((i for i in range(limit, 0, -1) if sentence[i].isspace()), limit)
        yield sentence[:cut]
        sentence = sentence[cut:]
    if sentence:
        yield sentence


def split_first_clause(parts: list[str], *, longer_than: int = FIRST_CLAUSE_FROM) -> list[str]:
    """`parts` with the first one cut after its first clause (at a comma, semicolon, colon or dash followed by a
    space, `CLAUSE_MIN_CHARS` in at least) when it is `longer_than` characters or more.

    A TTS engine that is not streaming (Piper) synthesises a whole request before any of it can play, and its time
    grows with the length: a shorter first request is heard sooner, and the rest is synthesised while it plays.
    Cutting where a speaker pauses anyway keeps the intonation natural; a part with no such place stays whole."""
    if not parts or len(parts[0]) < longer_than:
        return parts
    first = parts[0]
    for match in CLAUSE_END.finditer(first):
        cut = match.start()
        if len(first[:cut].strip()) >= CLAUSE_MIN_CHARS and first[cut:].strip():
            return [first[:cut], first[cut:], *parts[1:]]
    return parts
