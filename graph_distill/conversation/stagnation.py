"""Stagnation detection: is the talk going in circles, petering out, or ending too early?"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

_WORD = re.compile(r"[a-z0-9']+")
_ACK_WORDS = frozenset(
    "ok okay k kk thanks thank thx ty you so much got it cool great nice sure alright "
    "right i see understood perfect awesome yes yeah yep makes sense good all that's "
    "that thats clear helpful very will do noted fine".split()
)
_GOODBYE = re.compile(
    r"\b(bye|goodbye|good bye|see you|see ya|talk (to you )?later|signing off|"
    r"have a (good|nice|great) (day|one|night)|take care(?! of)|"
    r"that'?s all (for now|for today|i needed|i wanted|thanks))\b"
)
MAX_GOODBYE_WORDS = 30
ACK_ROUNDS = 2
MAX_ACK_WORDS = 8

REASONS = {
    "user_repeat": "the user repeated an earlier message",
    "assistant_repeat": "the assistant repeated an earlier reply",
    "acknowledgements": f"{ACK_ROUNDS} rounds of bare acknowledgements from the user",
    "early_goodbye": "the user said goodbye before the target round count",
}


def _normal(text: str) -> str:
    return text.lower().replace("\u2019", "'")


def _words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(_normal(text)))


@lru_cache(maxsize=8192)
def _shingles(text: str) -> frozenset[tuple[str, ...]]:
    words = _words(text)
    size = min(2, len(words))
    return (
        frozenset(words[i : i + size] for i in range(len(words) - size + 1))
        if words
        else (frozenset())
    )


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of word pairs: survives a few typos, cheap on long replies."""
    sa, sb = _shingles(a), _shingles(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


def repeats_earlier(texts: Sequence[str], threshold: float) -> bool:
    """Whether the last text is a near-copy of any earlier one."""
    if len(texts) < 2 or not _words(texts[-1]):
        return False
    return any(similarity(texts[-1], earlier) >= threshold for earlier in texts[:-1])


def is_acknowledgement(text: str) -> bool:
    words = _words(text)
    return 0 < len(words) <= MAX_ACK_WORDS and all(w in _ACK_WORDS for w in words)


def is_goodbye(text: str) -> bool:
    return len(_words(text)) <= MAX_GOODBYE_WORDS and bool(_GOODBYE.search(_normal(text)))


def detect_stall(
    user_texts: Sequence[str], assistant_texts: Sequence[str], threshold: float
) -> str | None:
    """The reason key (see ``REASONS``) when the latest round shows a stall, else None."""
    recent = user_texts[-ACK_ROUNDS:]
    if len(recent) == ACK_ROUNDS and all(is_acknowledgement(t) for t in recent):
        return "acknowledgements"
    if user_texts and is_goodbye(user_texts[-1]):
        return "early_goodbye"
    if repeats_earlier(user_texts, threshold):
        return "user_repeat"
    if repeats_earlier(assistant_texts, threshold):
        return "assistant_repeat"
    return None
