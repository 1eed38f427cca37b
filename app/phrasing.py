"""Cutting a translation into the segments its speech is synthesized in.

Speech starts once the first segment is spoken, so the first is short: a few
words. Each later segment may hold more words than the one before, so that
while one plays the voice has time to speak the next: with a voice at 0.7 of
real time, a growth of up to 1.4 keeps playback free of gaps. Segments end at
clause boundaries where the text has them, which keeps the intonation
natural; a clause is cut only where it is too long: in the first segment, or
past twice a later segment's share.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A clause ends after one of these, before white space.
# Limitation: words are what white space separates, so text in a script
# written without spaces (Chinese, Japanese, Thai) is spoken as one segment,
# and its speech starts only once all of it is synthesized.
_CLAUSE_END = re.compile(r"(?<=[,;:.!?…—])\s+")


@dataclass(frozen=True)
class PhrasingConfig:
    """How many words the segments of one utterance's speech hold."""

    first_words: int = 4
    growth: float = 1.5
    max_words: int = 40


def speech_segments(text: str, config: PhrasingConfig | None = None) -> list[str]:
    """`text` cut into segments to speak one after another, in order.

    Joined with single spaces, the segments are `text` with its white space
    collapsed. The same text and configuration always give the same segments,
    so a processor that takes over an utterance knows which were spoken.
    """
    config = config or PhrasingConfig()
    segments: list[str] = []
    current: list[str] = []
    budget = float(config.first_words)

    def flush() -> None:
        nonlocal current, budget
        if current:
            segments.append(" ".join(current))
            current = []
            budget = min(float(config.max_words), budget * config.growth)

    for clause in _CLAUSE_END.split(text.strip()):
        words = clause.split()
        while words:
            room = max(1, round(budget) - len(current))
            if len(words) <= room:
                current += words
                break
            if len(current) >= budget / 2:
                # Enough for a segment already: the clause starts the next one.
                flush()
                continue
            whole = min(float(config.max_words), 2 * budget)
            if segments and len(current) + len(words) <= whole:
                # Past the first segment, a whole clause beats an early start.
                current += words
                break
            current += words[:room]
            words = words[room:]
            flush()
        if len(current) >= budget:
            flush()

    flush()
    return segments
