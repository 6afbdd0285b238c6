"""Style marks of one user message, the same on simulated and real users: how it starts and
ends, a lower-case "i", greetings, politeness and frustration words, a question. The style
channel's calibration and the report's realism figures both count these."""

from __future__ import annotations

import re

from graph_distill.report.stats import words

CLOSING_PUNCTUATION = frozenset(".!?…:;)\"'`*]")
GREETINGS = frozenset({"hi", "hello", "hey", "greetings", "dear"})
SIGN_OFFS = frozenset({"thanks", "thank", "thx", "cheers", "regards", "ty"})
POLITE = frozenset({"please", "pls", "plz", "thanks", "thank", "thx", "kindly", "appreciate"})
FRUSTRATED = frozenset(
    {
        "wrong",
        "again",
        "still",
        "useless",
        "annoying",
        "ugh",
        "seriously",
        "doesnt",
        "didnt",
        "stop",
        "incorrect",
        "wtf",
    }
)
_LOWER_I = re.compile(r"(?<![\w'])i(?![\w]|'[a-z])|(?<![\w'])i(?='(?:m|ll|ve|d)\b)")
_PRONOUN_I = re.compile(r"(?<![\w'])[iI](?![\w])")
_FIRST_LETTER = re.compile(r"[^\W\d_]")


def starts_lower(text: str) -> bool | None:
    """Whether the first letter is lower case; None when the text has no letter."""
    found = _FIRST_LETTER.search(text)
    return found.group().islower() if found else None


def ends_unpunctuated(text: str) -> bool | None:
    """Whether the text ends without closing punctuation; None when it is blank."""
    stripped = text.rstrip()
    return stripped[-1] not in CLOSING_PUNCTUATION if stripped else None


def has_lower_i(text: str) -> bool:
    """Whether the pronoun is written as a lower-case "i" anywhere."""
    return bool(_LOWER_I.search(text))


def has_pronoun_i(text: str) -> bool:
    """Whether the pronoun "I" (either case, "I'm" and the like included) appears."""
    return bool(_PRONOUN_I.search(text))


def closes_with_sign_off(text: str) -> bool:
    """Whether one of the last two words is a sign-off ("thanks", "cheers", ...)."""
    tokens = words(text[-40:])
    return any(token in SIGN_OFFS for token in tokens[-2:])


def opens_with_greeting(text: str) -> bool:
    """Whether the first word is a greeting ("hi", "hello", ...)."""
    tokens = words(text[:40])
    return bool(tokens) and tokens[0] in GREETINGS


def has_question(text: str) -> bool:
    return "?" in text


def polite_words(text: str) -> int:
    return sum(token in POLITE for token in words(text))


def frustrated_words(text: str) -> int:
    """Negative or impatient words ("wrong", "still", "again", ...), a rough marker."""
    return sum(token in FRUSTRATED for token in words(text))
