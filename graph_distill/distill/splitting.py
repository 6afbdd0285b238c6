"""Split a conversation into overlapping chunks bounded by tokens or by turns.

A message's budgeted cost is its content tokens plus ``MESSAGE_TOKEN_OVERHEAD``. In the
*tokens* method a chunk holds whole messages (or parts of a message too big for any
chunk) whose costs sum to at most ``max_tokens``; the next chunk starts with the longest
run of trailing messages of the previous chunk whose cost fits ``overlap_tokens`` and
still leaves room for the next new message, so every chunk adds something new.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate

from langchain_text_splitters import RecursiveCharacterTextSplitter

from graph_distill.llm.tokens import count_tokens

# Chat framing per message (OpenAI-style `<|im_start|>role\n ... <|im_end|>\n` is 4
# tokens), so a chunk's budget holds when its messages are sent as a real prompt.
MESSAGE_TOKEN_OVERHEAD = 4
# One character is at most 4 UTF-8 bytes, and cl100k never spends more than one token
# per byte, so any budget of 4 content tokens can hold every piece of a message.
_MAX_CHARACTER_TOKENS = 4
MIN_MAX_TOKENS = MESSAGE_TOKEN_OVERHEAD + _MAX_CHARACTER_TOKENS
SPLIT_METHODS = ("tokens", "turns")
_SEPARATORS = ["\n\n", "\n", ". ", " ", ""]


@dataclass(frozen=True)
class Chunk:
    """One slice of a conversation; ``turn_range`` is inclusive, 0-based message indices."""

    index: int
    messages: list[dict]
    turn_range: tuple[int, int]
    tokens: int


@dataclass(frozen=True)
class _Unit:
    """A whole message, or part ``part[0]`` (1-based) of ``part[1]`` of a split one."""

    role: str
    content: str
    turn: int
    cost: int
    part: tuple[int, int] | None = None

    def as_message(self) -> dict:
        message: dict = {"role": self.role, "content": self.content, "turn": self.turn}
        if self.part is not None:
            message["part"] = list(self.part)
        return message


def split_conversation(
    messages: Sequence[Mapping],
    method: str = "tokens",
    *,
    max_tokens: int = 4000,
    overlap_tokens: int = 200,
    max_turns: int = 10,
    overlap_turns: int = 2,
) -> list[Chunk]:
    """Split with ``method`` ("tokens" or "turns"); only that method's limits are used."""
    if method == "tokens":
        return split_by_tokens(messages, max_tokens, overlap_tokens)
    if method == "turns":
        return split_by_turns(messages, max_turns, overlap_turns)
    raise ValueError(f"unknown split method {method!r}; expected one of {SPLIT_METHODS}")


def split_by_tokens(
    messages: Sequence[Mapping], max_tokens: int = 4000, overlap_tokens: int = 200
) -> list[Chunk]:
    """Chunks of at most ``max_tokens`` budgeted tokens, overlapping by whole messages."""
    if max_tokens < MIN_MAX_TOKENS:
        raise ValueError(
            f"max_tokens must be at least {MIN_MAX_TOKENS} "
            f"({MESSAGE_TOKEN_OVERHEAD} tokens of message framing plus room for text), "
            f"got {max_tokens}"
        )
    if not 0 <= overlap_tokens < max_tokens:
        raise ValueError(
            f"overlap_tokens must be at least 0 and less than max_tokens ({max_tokens}), "
            f"got {overlap_tokens}"
        )
    units = _token_units(_validated(messages), max_tokens - MESSAGE_TOKEN_OVERHEAD)
    costs = [unit.cost for unit in units]
    return _chunks(units, _token_spans(costs, max_tokens, overlap_tokens))


def split_by_turns(
    messages: Sequence[Mapping], max_turns: int = 10, overlap_turns: int = 2
) -> list[Chunk]:
    """Chunks of ``max_turns`` messages, each sharing ``overlap_turns`` with the previous."""
    if max_turns < 1:
        raise ValueError(f"max_turns must be at least 1, got {max_turns}")
    if not 0 <= overlap_turns < max_turns:
        raise ValueError(
            f"overlap_turns must be at least 0 and less than max_turns ({max_turns}), "
            f"got {overlap_turns}"
        )
    units = _whole_units(_validated(messages))
    if not units:
        return []
    starts = range(0, max(len(units) - overlap_turns, 1), max_turns - overlap_turns)
    return _chunks(units, [(start, min(start + max_turns, len(units))) for start in starts])


def _validated(messages: Sequence[Mapping]) -> list[tuple[str, str]]:
    pairs = []
    for turn, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(f"message {turn} needs a string 'role' and a string 'content'")
        pairs.append((role, content))
    return pairs


def _whole_units(messages: list[tuple[str, str]]) -> list[_Unit]:
    # One plain encode per message: faster here than encode_ordinary_batch's thread pool.
    return [
        _Unit(role, content, turn, count_tokens(content) + MESSAGE_TOKEN_OVERHEAD)
        for turn, (role, content) in enumerate(messages)
    ]


def _token_units(messages: list[tuple[str, str]], content_budget: int) -> list[_Unit]:
    units: list[_Unit] = []
    for unit in _whole_units(messages):
        if unit.cost - MESSAGE_TOKEN_OVERHEAD <= content_budget:
            units.append(unit)
        else:
            units.extend(_message_parts(unit, content_budget))
    return units


def _message_parts(unit: _Unit, content_budget: int) -> list[_Unit]:
    parts = _packed(_split_text(unit.content, content_budget, content_budget), content_budget)
    return [
        _Unit(unit.role, text, unit.turn, tokens + MESSAGE_TOKEN_OVERHEAD, (number, len(parts)))
        for number, (text, tokens) in enumerate(parts, start=1)
    ]


def _split_text(text: str, content_budget: int, chunk_size: int) -> list[tuple[str, int]]:
    """Pieces of ``text`` (with their token counts) within ``content_budget`` tokens that
    concatenate back to it."""
    splitter = RecursiveCharacterTextSplitter(
        separators=_SEPARATORS,
        keep_separator="end",
        chunk_size=chunk_size,
        chunk_overlap=0,
        length_function=count_tokens,
        strip_whitespace=False,
    )
    pieces: list[tuple[str, int]] = []
    for piece in splitter.split_text(text):
        tokens = count_tokens(piece)
        if tokens <= content_budget:
            pieces.append((piece, tokens))
        else:  # the splitter sums its pieces' counts, and joined text can encode longer
            pieces.extend(_split_text(piece, content_budget, max(1, chunk_size // 2)))
    return pieces


def _packed(pieces: list[tuple[str, int]], content_budget: int) -> list[tuple[str, int]]:
    """Adjacent pieces joined while the real count fits: summed piece counts overestimate
    joined text (" Para" is one token, "Para" + " " two), leaving parts underfilled."""
    parts: list[tuple[str, int]] = []
    text, tokens = "", 0
    for piece, piece_tokens in pieces:
        joined_tokens = count_tokens(text + piece) if text else piece_tokens
        if joined_tokens > content_budget:
            parts.append((text, tokens))
            text, tokens = piece, piece_tokens
        else:
            text, tokens = text + piece, joined_tokens
    if text:
        parts.append((text, tokens))
    return parts


def _token_spans(costs: list[int], max_tokens: int, overlap_tokens: int) -> list[tuple[int, int]]:
    """Half-open unit ranges, greedily filled; costs are positive and each fits max_tokens."""
    if not costs:
        return []
    prefix = [0, *accumulate(costs)]
    spans = []
    start = 0
    while True:
        end = bisect_right(prefix, prefix[start] + max_tokens) - 1
        spans.append((start, end))
        if end == len(costs):
            return spans
        overlap_limit = min(overlap_tokens, max_tokens - costs[end])
        start = bisect_left(prefix, prefix[end] - overlap_limit, start + 1, end)


def _chunks(units: list[_Unit], spans: list[tuple[int, int]]) -> list[Chunk]:
    return [
        Chunk(
            index=index,
            messages=[unit.as_message() for unit in units[start:end]],
            turn_range=(units[start].turn, units[end - 1].turn),
            tokens=sum(unit.cost for unit in units[start:end]),
        )
        for index, (start, end) in enumerate(spans)
    ]
