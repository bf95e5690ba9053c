"""Judging transcripts in tests: word error rate on normalised text (jiwer)."""

from __future__ import annotations

import re

import jiwer


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, whitespace folded: what a listener would call the same words."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (an empty hypothesis counts as all words missed)."""
    return float(jiwer.wer(normalise(reference), normalise(hypothesis) or "<empty>"))
