"""The style channel: how real users type, applied to simulated user messages after the typos.

Seeded like the typo channel (from seed, user-turn index and text only), so a resumed
conversation is styled like an uninterrupted one. Per message it may lower-case the first
letter, drop the closing punctuation, write the pronoun as "i", drop a greeting or a sign-off,
and join two sentences without punctuation. Each mark's chance is the share real users show
(data/style_rates.json, written by scripts/calibrate_style.py) times the persona's relative
scale times ``--style-rate``. Code spans, URLs, paths and identifiers are never touched."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

from graph_distill.conversation.noise import NoiseResult

# Style edits are named "style <mark>: ..." so the report tells them from typos.
STYLE_PREFIX = "style "
_RATES_RESOURCE = "data/style_rates.json"
MARKS = ("lower_start", "no_closing_punctuation", "lower_i", "greeting", "sign_off", "run_on")

_PROTECTED = re.compile(
    r"(?P<fence>```|~~~)[\s\S]*?(?:(?P=fence)|\Z)|`[^`\n]+`|\S*(?:://|www\.|@)\S*"
    r"|\S*[/\\]\S*|\S*[_.]\w+\(?\S*"
)
_GREETING = re.compile(r"\A\s*(?:hi|hello|hey|greetings|dear)\b[^\n.!?,]{0,20}[,.!]*\s+", re.I)
_SIGN_OFF = re.compile(
    r"(?:(?<=[.!?])|(?<=\n))\s*(?:thanks|thank you|thx|cheers|regards|ty)\b"
    r"[^.!?\n]{0,25}[.!]*\s*\Z",
    re.I,
)
_PRONOUN_I = re.compile(r"(?<![\w'])I(?![\w])")
_I_OPENINGS = 0.25
_SENTENCE_JOIN = re.compile(r"(?<=[a-z])\. (?=[A-Z][a-z])")


@dataclass(frozen=True)
class _Edit:
    kind: str
    text: str


@cache
def calibrated_rates() -> dict[str, float]:
    """The shares real users show, per mark (the shipped calibration)."""
    text = (
        resources.files("graph_distill.conversation").joinpath(_RATES_RESOURCE).read_text("utf-8")
    )
    data = json.loads(text)
    return {mark: float(data[mark]) for mark in MARKS}


def is_style_edit(edit: str) -> bool:
    return edit.startswith(STYLE_PREFIX)


def style_user_message(
    text: str,
    *,
    seed: int,
    user_turn: int,
    rate: float,
    persona_scale: float = 1.0,
    rates: Mapping[str, float] | None = None,
) -> NoiseResult | None:
    """The styled message, or None when nothing changed (always None at ``rate`` 0)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"style rate must be within [0, 1], got {rate}")
    if rate == 0 or not text.strip():
        return None
    rates = calibrated_rates() if rates is None else rates
    scale = rate * persona_scale
    rng = _seeded("style", seed, user_turn, text)
    edits: list[str] = []
    # Greetings and sign-offs are dropped so that few remain (as few as real users write).
    for keep_share, step in (
        (rates["greeting"], _drop_greeting),
        (rates["sign_off"], _drop_sign_off),
    ):
        if rng.random() < min(1.0, scale * (1.0 - keep_share)):
            text = _record(step(text), text, edits)
    for kind, step in (
        ("run_on", _join_sentences),
        ("lower_i", _lower_i),
        ("no_closing_punctuation", _drop_closing),
        ("lower_start", _lower_start),
    ):
        chance = scale * rates[kind]
        if kind == "lower_start":
            # Messages opening with "I" start in lower case only through the "i" mark: the
            # others make up for them (simulated users open with "I" about 1 in 4 times).
            chance /= 1 - _I_OPENINGS
        if rng.random() < min(1.0, chance):
            text = _record(step(text), text, edits)
    return NoiseResult(text, edits) if edits else None


def _record(edit: _Edit | None, text: str, edits: list[str]) -> str:
    if edit is None or edit.text == text:
        return text
    edits.append(f"{STYLE_PREFIX}{edit.kind}")
    return edit.text


def _seeded(*parts: object) -> random.Random:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _outside_code(text: str, pattern: re.Pattern[str], replace: str) -> str:
    """``pattern`` replaced by ``replace`` in the prose between protected spans only."""
    out, last = [], 0
    for match in _PROTECTED.finditer(text):
        out += [pattern.sub(replace, text[last : match.start()]), match.group()]
        last = match.end()
    return "".join([*out, pattern.sub(replace, text[last:])])


def _protected_at(text: str, index: int) -> bool:
    return any(m.start() <= index < m.end() for m in _PROTECTED.finditer(text))


def _drop_greeting(text: str) -> _Edit | None:
    match = _GREETING.match(text)
    if not match or not text[match.end() :].strip():
        return None
    rest = text[match.end() :]
    return _Edit("greeting", rest[:1].upper() + rest[1:])


def _drop_sign_off(text: str) -> _Edit | None:
    match = _SIGN_OFF.search(text)
    if not match or not text[: match.start()].strip():
        return None
    return _Edit("sign-off", text[: match.start()].rstrip())


def _lower_i(text: str) -> _Edit | None:
    return _Edit("lower i", _outside_code(text, _PRONOUN_I, "i"))


def _join_sentences(text: str) -> _Edit | None:
    spots = [m for m in _SENTENCE_JOIN.finditer(text) if not _protected_at(text, m.start())]
    if not spots:
        return None
    spot = spots[0]
    after = spot.end()
    joined = text[: spot.start()] + " " + text[after].lower() + text[after + 1 :]
    return _Edit("run-on", joined)


def _drop_closing(text: str) -> _Edit | None:
    stripped = text.rstrip()
    end = len(stripped)
    while end and stripped[end - 1] in ".!?":
        end -= 1
    if end == len(stripped) or not end or _protected_at(stripped, len(stripped) - 1):
        return None
    return _Edit("no closing punctuation", stripped[:end])


def _lower_start(text: str) -> _Edit | None:
    match = re.search(r"[^\W\d_]", text)
    if not match or not match.group().isupper() or _protected_at(text, match.start()):
        return None
    word = re.match(r"\w+", text[match.start() :])
    # Acronyms ("API", "SQL") keep their capitals, and so does a leading "I": the lower-case "i"
    # mark writes it in lower case everywhere, consistently.
    if word and (word.group() == "I" or word.group()[1:2].isupper()):
        return None
    i = match.start()
    return _Edit("lower start", text[:i] + text[i].lower() + text[i + 1 :])
