"""Seeded typos and grammar slips for simulated user messages.

Which user turns get noise and what the edits are derive only from
(seed, conversation-local user-turn index, rate, text), never from RNG state carried
between calls, so a resumed conversation is noised exactly like an uninterrupted one.
Code spans, fenced blocks, URLs, e-mail addresses, numbers and path-like tokens are
never touched.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

# Turns are noised in blocks: each block gets its share of the rate (with the
# fractional remainder carried across blocks), spread over seeded positions, so the
# realized rate stays within one block's worth of the target for every seed. A seeded
# phase shifts the carry so the blocks that get the extra turn differ between seeds.
_BLOCK = 20
_EXTRA_EDIT_WEIGHT = 0.3

# Only plain words are edited, so URLs, e-mail addresses, paths, numbers and
# identifiers (which all carry ``:/.@_`` or digits inside) never are; code spans are
# masked on top of that because they can contain plain words separated by spaces.
_CODE = re.compile(r"(?P<fence>```|~~~)[\s\S]*?(?:(?P=fence)|\Z)|``[^\n]*?``|`[^`\n]+`")
_CHUNK = re.compile(r"(\S+)\s*")
_PLAIN = re.compile(
    r"(?P<lead>[(\"'“‘*]*)(?P<core>[A-Za-z]+(?:['’][A-Za-z]+)?)(?P<trail>[)\"'”’.,!?;:*]*)"
)
_SENTENCE_END = re.compile(r"[.!?][\"')\]”’*]*$")

_KEY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


def _keyboard_neighbours() -> dict[str, str]:
    # Each row sits half a key right of the one above: key i touches i and i+1 above
    # and i-1 and i below.
    neighbours: dict[str, str] = {}
    for row_index, row in enumerate(_KEY_ROWS):
        for col, key in enumerate(row):
            near = [row[c] for c in (col - 1, col + 1) if 0 <= c < len(row)]
            if row_index > 0:
                above = _KEY_ROWS[row_index - 1]
                near += [above[c] for c in (col, col + 1) if c < len(above)]
            if row_index + 1 < len(_KEY_ROWS):
                below = _KEY_ROWS[row_index + 1]
                near += [below[c] for c in (col - 1, col) if 0 <= c < len(below)]
            neighbours[key] = "".join(near)
    return neighbours


_NEIGHBOURS = _keyboard_neighbours()
_ARTICLES = frozenset({"a", "an", "the"})
_REPEATABLE = frozenset({"the", "a", "to", "of", "in", "is", "it", "and", "that", "for", "on"})
_AGREEMENT = {
    "is": "are",
    "are": "is",
    "was": "were",
    "were": "was",
    "has": "have",
    "have": "has",
    "does": "do",
    "do": "does",
    "doesn't": "don't",
    "don't": "doesn't",
    "isn't": "aren't",
    "aren't": "isn't",
    "wasn't": "weren't",
    "weren't": "wasn't",
}


@dataclass(frozen=True)
class NoiseResult:
    text: str
    edits: list[str]


@dataclass(frozen=True)
class _Chunk:
    """One whitespace-separated token; ``core`` is empty unless it may be edited."""

    raw: str
    start: int
    end: int
    tail: int  # end of the whitespace after the token
    lead: str = ""
    core: str = ""
    trail: str = ""


@dataclass(frozen=True)
class _Change:
    start: int
    end: int
    replacement: str
    description: str


@dataclass(frozen=True)
class _Kind:
    weight: int
    eligible: Callable[[Sequence[_Chunk], int], bool]
    apply: Callable[[_Chunk, random.Random], _Change]


def should_noise(seed: int, user_turn: int, rate: float) -> bool:
    """Whether user turn ``user_turn`` (0-based, within one conversation) gets noise."""
    _check_rate(rate)
    if user_turn < 0:
        raise ValueError(f"user_turn must be >= 0, got {user_turn}")
    block, slot = divmod(user_turn, _BLOCK)
    phase = _seeded("phase", seed).random()
    quota = _noised_before(block + 1, rate, phase) - _noised_before(block, rate, phase)
    return slot in _block_order(seed, block)[:quota]


def add_noise(text: str, rng: random.Random, max_edits: int = 3) -> NoiseResult:
    """1..max_edits slips (mostly 1) in the editable words of ``text``."""
    if max_edits < 1:
        raise ValueError(f"max_edits must be >= 1, got {max_edits}")
    chunks = _chunks(text)
    eligible = [
        (kind, [i for i, chunk in enumerate(chunks) if chunk.core and kind.eligible(chunks, i)])
        for kind in _KINDS
    ]
    wanted = rng.choices(
        range(1, max_edits + 1), weights=[_EXTRA_EDIT_WEIGHT**k for k in range(max_edits)]
    )[0]
    used: set[int] = set()
    changes: list[_Change] = []
    for _ in range(wanted):
        change = _pick_change(chunks, eligible, used, rng)
        if change is None:
            break
        changes.append(change)
    return NoiseResult(_apply(text, changes), [change.description for change in changes])


def noise_user_message(text: str, *, seed: int, user_turn: int, rate: float) -> NoiseResult | None:
    """The noised user message, or None when this turn is not noised or nothing is editable."""
    if not should_noise(seed, user_turn, rate):
        return None
    result = add_noise(text, _seeded("edits", seed, user_turn, text))
    return result if result.edits else None


def _check_rate(rate: float) -> None:
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"typo rate must be within [0, 1], got {rate}")


def _seeded(*parts: object) -> random.Random:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _noised_before(blocks: int, rate: float, phase: float) -> int:
    return math.floor(rate * blocks * _BLOCK + phase)


@lru_cache(maxsize=4096)
def _block_order(seed: int, block: int) -> tuple[int, ...]:
    return tuple(_seeded("order", seed, block).sample(range(_BLOCK), _BLOCK))


def _chunks(text: str) -> list[_Chunk]:
    code_spans = [match.span() for match in _CODE.finditer(text)]
    code_starts = [start for start, _ in code_spans]
    chunks = []
    for match in _CHUNK.finditer(text):
        start, end = match.span(1)
        # Code spans are sorted and disjoint: only the last one starting before
        # ``end`` can overlap this token.
        last = bisect_left(code_starts, end) - 1
        plain = _PLAIN.fullmatch(match[1])
        if plain and (last < 0 or code_spans[last][1] <= start):
            chunks.append(_Chunk(match[1], start, end, match.end(), **plain.groupdict()))
        else:
            chunks.append(_Chunk(match[1], start, end, match.end()))
    return chunks


def _pick_change(
    chunks: Sequence[_Chunk],
    eligible: list[tuple[_Kind, list[int]]],
    used: set[int],
    rng: random.Random,
) -> _Change | None:
    available = [
        (kind, options)
        for kind, indices in eligible
        if (options := [i for i in indices if i not in used])
    ]
    if not available:
        return None
    kind, options = rng.choices(available, weights=[kind.weight for kind, _ in available])[0]
    index = rng.choices(options, weights=[len(chunks[i].core) for i in options])[0]
    used.add(index)
    return kind.apply(chunks[index], rng)


def _apply(text: str, changes: list[_Change]) -> str:
    for change in sorted(changes, key=lambda c: c.start, reverse=True):
        text = text[: change.start] + change.replacement + text[change.end :]
    return text


def _word_change(chunk: _Chunk, label: str, new_core: str) -> _Change:
    return _Change(
        chunk.start,
        chunk.end,
        chunk.lead + new_core + chunk.trail,
        f"{label}: '{chunk.core}' -> '{new_core}'",
    )


def _match_case(model: str, word: str) -> str:
    return word[:1].upper() + word[1:] if model[:1].isupper() else word


def _is_word(core: str, min_len: int) -> bool:
    """An ordinary word: letters only, lowercase or Capitalized (no acronyms or CamelCase)."""
    return len(core) >= min_len and core.isalpha() and core[1:].islower()


def _swap_positions(core: str) -> list[int]:
    return [i for i in range(1, len(core) - 1) if core[i] != core[i + 1]]


def _swap_ok(chunks: Sequence[_Chunk], i: int) -> bool:
    return _is_word(chunks[i].core, 3) and bool(_swap_positions(chunks[i].core))


def _swap(chunk: _Chunk, rng: random.Random) -> _Change:
    core = chunk.core
    i = rng.choice(_swap_positions(core))
    return _word_change(chunk, "swap", core[:i] + core[i + 1] + core[i] + core[i + 2 :])


def _long_word_ok(chunks: Sequence[_Chunk], i: int) -> bool:
    return _is_word(chunks[i].core, 4)


def _drop_letter(chunk: _Chunk, rng: random.Random) -> _Change:
    core = chunk.core
    i = rng.randrange(1, len(core))
    return _word_change(chunk, "drop letter", core[:i] + core[i + 1 :])


def _letter_ok(chunks: Sequence[_Chunk], i: int) -> bool:
    return _is_word(chunks[i].core, 3)


def _double_letter(chunk: _Chunk, rng: random.Random) -> _Change:
    core = chunk.core
    i = rng.randrange(1, len(core))
    return _word_change(chunk, "double letter", core[: i + 1] + core[i:])


def _keyboard(chunk: _Chunk, rng: random.Random) -> _Change:
    core = chunk.core
    i = rng.randrange(1, len(core))
    hit = rng.choice(_NEIGHBOURS[core[i]])
    return _word_change(chunk, "keyboard", core[:i] + hit + core[i + 1 :])


def _article_ok(chunks: Sequence[_Chunk], i: int) -> bool:
    chunk = chunks[i]
    bare = not chunk.lead and not chunk.trail
    followed = i + 1 < len(chunks) and chunks[i + 1].core not in ("", *_ARTICLES)
    return bare and chunk.core in _ARTICLES and followed


def _drop_article(chunk: _Chunk, rng: random.Random) -> _Change:
    return _Change(chunk.start, chunk.tail, "", f"drop article: '{chunk.core}'")


def _agreement_ok(chunks: Sequence[_Chunk], i: int) -> bool:
    core = chunks[i].core
    return core[1:].islower() and core.lower() in _AGREEMENT


def _agreement(chunk: _Chunk, rng: random.Random) -> _Change:
    wrong = _match_case(chunk.core, _AGREEMENT[chunk.core.lower()])
    return _word_change(chunk, "agreement", wrong)


def _apostrophe_ok(chunks: Sequence[_Chunk], i: int) -> bool:
    return any(mark in chunks[i].core for mark in "'’")


def _drop_apostrophe(chunk: _Chunk, rng: random.Random) -> _Change:
    return _word_change(chunk, "drop apostrophe", re.sub("['’]", "", chunk.core))


def _sentence_start_ok(chunks: Sequence[_Chunk], i: int) -> bool:
    chunk = chunks[i]
    starts = i == 0 or bool(_SENTENCE_END.search(chunks[i - 1].raw))
    pronoun_i = re.match(r"I(?:['’]|$)", chunk.core) is not None
    capitalized = chunk.core[:1].isupper() and (chunk.core[1:].islower() or len(chunk.core) == 1)
    return starts and not chunk.lead and capitalized and not pronoun_i


def _lowercase_start(chunk: _Chunk, rng: random.Random) -> _Change:
    return _word_change(chunk, "lowercase start", chunk.core[0].lower() + chunk.core[1:])


def _double_word_ok(chunks: Sequence[_Chunk], i: int) -> bool:
    chunk = chunks[i]
    return not chunk.lead and not chunk.trail and chunk.core in _REPEATABLE


def _double_word(chunk: _Chunk, rng: random.Random) -> _Change:
    doubled = f"{chunk.core} {chunk.core}"
    return _Change(chunk.start, chunk.end, doubled, f"double word: '{chunk.core}' -> '{doubled}'")


# Weights: plain keyboard typos dominate, grammar slips are rarer.
_KINDS = (
    _Kind(30, _letter_ok, _keyboard),
    _Kind(22, _swap_ok, _swap),
    _Kind(16, _long_word_ok, _drop_letter),
    _Kind(10, _long_word_ok, _double_letter),
    _Kind(7, _article_ok, _drop_article),
    _Kind(6, _agreement_ok, _agreement),
    _Kind(4, _apostrophe_ok, _drop_apostrophe),
    _Kind(3, _sentence_start_ok, _lowercase_start),
    _Kind(2, _double_word_ok, _double_word),
)
