import random
from collections import defaultdict
from collections.abc import Mapping
from itertools import pairwise
from types import MappingProxyType

import pytest

from graph_distill.distill.splitting import (
    MESSAGE_TOKEN_OVERHEAD,
    MIN_MAX_TOKENS,
    Chunk,
    split_by_tokens,
    split_by_turns,
    split_conversation,
)
from graph_distill.llm.tokens import count_tokens

WORDS = (
    "the a gradient descent learning rate model training data batch thread process "
    "function list empty server config JSON parse error retry timeout cache index query "
    "résumé naïve café 数据 模型 训练 🙂 🚀 don't it's e.g. v1.2.3 /usr/local/bin x=42"
).split()
SEEDS = range(6)
TOKEN_CONFIGS = [(4000, 200), (300, 50), (120, 100), (60, 59), (40, 0), (MIN_MAX_TOKENS, 0)]


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 18))]
    return " ".join(words).capitalize() + rng.choice([".", "?", "!", ":"])


def paragraph(rng: random.Random) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randint(1, 6)))


def message_text(rng: random.Random) -> str:
    shape = rng.random()
    if shape < 0.05:
        return ""
    if shape < 0.1:  # no natural boundary at all
        return rng.choice(["x", "ab", "数据", "🙂"]) * rng.randint(50, 3000)
    if shape < 0.2:
        return "\n\n".join(paragraph(rng) for _ in range(rng.randint(5, 40)))
    if shape < 0.25:
        return "```\n" + "\n".join(f"line_{i} = call({i})" for i in range(300)) + "\n```"
    return "\n".join(paragraph(rng) for _ in range(rng.randint(1, 3)))


def conversation(seed: int, length: int = 40) -> list[dict]:
    rng = random.Random(seed)
    messages = [{"role": "system", "content": "You are helpful."}]
    for turn in range(length):
        role = "user" if turn % 2 == 0 else "assistant"
        messages.append({"role": role, "content": message_text(rng)})
    return messages


def unit_key(message: dict) -> tuple:
    return (message["turn"], tuple(message.get("part", ())))


def cost(message: dict) -> int:
    return count_tokens(message["content"]) + MESSAGE_TOKEN_OVERHEAD


def unit_sequence(chunks: list[Chunk]) -> list[dict]:
    """Every distinct message/part in conversation order (chunks are in order)."""
    seen: dict[tuple, dict] = {}
    for chunk in chunks:
        for message in chunk.messages:
            seen.setdefault(unit_key(message), message)
    return sorted(seen.values(), key=unit_key)


def slice_bounds(chunks: list[Chunk]) -> list[tuple[int, int]]:
    position = {unit_key(m): i for i, m in enumerate(unit_sequence(chunks))}
    bounds = []
    for chunk in chunks:
        indices = [position[unit_key(m)] for m in chunk.messages]
        assert indices == list(range(indices[0], indices[-1] + 1)), "chunk is not contiguous"
        bounds.append((indices[0], indices[-1] + 1))
    return bounds


def assert_covers(messages: list[dict], chunks: list[Chunk]) -> None:
    pieces: dict[int, dict[int, str]] = defaultdict(dict)
    counts: dict[int, set[int]] = defaultdict(set)
    for unit in unit_sequence(chunks):
        original = messages[unit["turn"]]
        assert unit["role"] == original["role"]
        assert set(unit) <= {"role", "content", "turn", "part"}
        number, total = unit.get("part", (1, 1))
        pieces[unit["turn"]][number] = unit["content"]
        counts[unit["turn"]].add(total)
    assert sorted(pieces) == list(range(len(messages)))
    for turn, parts in pieces.items():
        (total,) = counts[turn]
        assert sorted(parts) == list(range(1, total + 1))
        assert "".join(parts[n] for n in sorted(parts)) == messages[turn]["content"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("max_tokens", "overlap_tokens"), TOKEN_CONFIGS)
def test_token_chunks_cover_fit_and_overlap(seed: int, max_tokens: int, overlap_tokens: int):
    messages = conversation(seed, length=40 if max_tokens >= 100 else 12)
    chunks = split_by_tokens(messages, max_tokens, overlap_tokens)

    assert_covers(messages, chunks)
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    units = unit_sequence(chunks)
    bounds = slice_bounds(chunks)
    assert bounds[0][0] == 0
    assert bounds[-1][1] == len(units)
    for chunk in chunks:
        assert chunk.tokens == sum(cost(m) for m in chunk.messages) <= max_tokens
        assert chunk.turn_range == (chunk.messages[0]["turn"], chunk.messages[-1]["turn"])
    for (start, end), (next_start, next_end) in pairwise(bounds):
        assert start < next_start <= end < next_end  # progress, no gap
        overlap = sum(cost(m) for m in units[next_start:end])
        assert overlap <= overlap_tokens
        assert overlap + cost(units[end]) <= max_tokens
        widened = overlap + cost(units[next_start - 1])
        assert widened > overlap_tokens or widened + cost(units[end]) > max_tokens
        chunk_tokens = sum(cost(m) for m in units[start:end])
        assert chunk_tokens + cost(units[end]) > max_tokens  # chunks are filled greedily


@pytest.mark.parametrize("seed", SEEDS)
def test_overlap_repeats_trailing_messages(seed: int):
    rng = random.Random(seed)
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": sentence(rng)} for i in range(80)
    ]
    assert max(cost(m) for m in messages) < 60  # so some trailing messages always fit
    chunks = split_by_tokens(messages, max_tokens=400, overlap_tokens=120)
    assert len(chunks) > 3
    for previous, following in pairwise(chunks):
        shared = max(
            size
            for size in range(len(previous.messages))
            if previous.messages[len(previous.messages) - size :] == following.messages[:size]
        )
        overlap = following.messages[:shared]
        assert shared >= 2
        assert (
            sum(cost(m) for m in overlap)
            <= 120
            < sum(cost(m) for m in previous.messages[-shared - 1 :])
        )
        assert following.turn_range[0] == overlap[0]["turn"] == previous.turn_range[1] - shared + 1


def test_zero_overlap_shares_nothing():
    chunks = split_by_tokens(conversation(3), max_tokens=300, overlap_tokens=0)
    for previous, following in pairwise(chunks):
        assert unit_key(previous.messages[-1]) < unit_key(following.messages[0])


@pytest.mark.parametrize("overlap_tokens", [0, 97, 98, 99])
def test_overlap_near_budget_still_progresses(overlap_tokens: int):
    messages = [{"role": "user", "content": "word " * 40} for _ in range(30)]
    chunks = split_by_tokens(messages, max_tokens=100, overlap_tokens=overlap_tokens)
    assert len(chunks) <= len(messages)
    assert_covers(messages, chunks)
    assert [chunk.turn_range[1] for chunk in chunks] == sorted(
        {chunk.turn_range[1] for chunk in chunks}
    )


def test_oversized_message_is_split_into_numbered_parts():
    rng = random.Random(7)
    long_text = "\n\n".join(paragraph(rng) for _ in range(60))
    messages = [
        {"role": "user", "content": "Explain it all."},
        {"role": "assistant", "content": long_text},
        {"role": "user", "content": "Thanks."},
    ]
    max_tokens = 300
    chunks = split_by_tokens(messages, max_tokens=max_tokens, overlap_tokens=40)

    parts = [m for m in unit_sequence(chunks) if m["turn"] == 1]
    total = len(parts)
    assert total > 3
    assert [m["part"] for m in parts] == [[i, total] for i in range(1, total + 1)]
    assert all(m["role"] == "assistant" for m in parts)
    assert "".join(m["content"] for m in parts) == long_text
    content_budget = max_tokens - MESSAGE_TOKEN_OVERHEAD
    for part, following in pairwise(parts):
        assert count_tokens(part["content"]) <= content_budget
        assert count_tokens(part["content"] + following["content"]) > content_budget
        assert part["content"].endswith((" ", "\n")), "parts end on a natural boundary"
    assert all("part" not in m for m in unit_sequence(chunks) if m["turn"] != 1)


@pytest.mark.parametrize("text", ["x" * 20000, "🙂" * 3000, "数据模型" * 2000, "a\u0301" * 3000])
@pytest.mark.parametrize("max_tokens", [MIN_MAX_TOKENS, 9, 500])
def test_oversized_text_without_boundaries_splits_exactly(text: str, max_tokens: int):
    chunks = split_by_tokens([{"role": "user", "content": text}], max_tokens, 0)
    assert_covers([{"role": "user", "content": text}], chunks)
    assert all(chunk.tokens <= max_tokens for chunk in chunks)
    parts = [m["content"] for m in unit_sequence(chunks)]
    assert len(parts) > 1
    for part, following in pairwise(parts):  # parts are filled, not cut at a guessed size
        assert count_tokens(part + following) > max_tokens - MESSAGE_TOKEN_OVERHEAD


def test_small_conversation_is_one_chunk_with_exact_messages():
    messages = [
        MappingProxyType({"role": "system", "content": "Be brief.", "id": 1}),
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": ""},
    ]
    (chunk,) = split_by_tokens(messages)
    assert chunk == Chunk(
        index=0,
        messages=[
            {"role": "system", "content": "Be brief.", "turn": 0},
            {"role": "user", "content": "Hi there", "turn": 1},
            {"role": "assistant", "content": "", "turn": 2},
        ],
        turn_range=(0, 2),
        tokens=count_tokens("Be brief.") + count_tokens("Hi there") + 3 * MESSAGE_TOKEN_OVERHEAD,
    )


@pytest.mark.parametrize("length", [0, 1, 2, 9, 10, 11, 12, 17, 18, 19, 25])
@pytest.mark.parametrize(("max_turns", "overlap_turns"), [(10, 2), (10, 0), (3, 2), (1, 0)])
def test_turn_chunks(length: int, max_turns: int, overlap_turns: int):
    messages = conversation(length, length)[1:]
    chunks = split_by_turns(messages, max_turns, overlap_turns)
    if not messages:
        assert chunks == []
        return
    assert_covers(messages, chunks)
    ranges = [chunk.turn_range for chunk in chunks]
    assert ranges[0][0] == 0
    assert ranges[-1][1] == len(messages) - 1
    for chunk in chunks:
        first, last = chunk.turn_range
        assert [m["turn"] for m in chunk.messages] == list(range(first, last + 1))
        assert len(chunk.messages) <= max_turns
        assert all("part" not in m for m in chunk.messages)
        assert chunk.tokens == sum(cost(m) for m in chunk.messages)
    for (_, last), (next_first, next_last) in pairwise(ranges):
        assert last - next_first + 1 == overlap_turns
        assert next_last > last
    assert all(len(chunk.messages) == max_turns for chunk in chunks[:-1])


def test_turn_chunks_keep_long_messages_whole():
    messages = [{"role": "user", "content": "word " * 9000}, {"role": "assistant", "content": "ok"}]
    (chunk,) = split_by_turns(messages)
    assert chunk.messages[0]["content"] == messages[0]["content"]
    assert chunk.tokens > 9000


@pytest.mark.parametrize("method", ["tokens", "turns"])
def test_split_conversation_dispatches_and_is_deterministic(method: str):
    messages = conversation(11)
    snapshot = [dict(m) for m in messages]
    options = {"max_tokens": 250, "overlap_tokens": 60, "max_turns": 6, "overlap_turns": 1}
    chunks = split_conversation(messages, method, **options)
    assert chunks == split_conversation(messages, method, **options)
    direct = (
        split_by_tokens(messages, 250, 60) if method == "tokens" else split_by_turns(messages, 6, 1)
    )
    assert chunks == direct
    assert messages == snapshot
    chunks[0].messages[0]["content"] = "changed"
    assert split_conversation(messages, method, **options)[0].messages[0]["content"] != "changed"


def test_defaults_are_tokens_4000_200():
    messages = conversation(5, 120)
    assert split_conversation(messages) == split_by_tokens(messages, 4000, 200)
    assert all(chunk.tokens <= 4000 for chunk in split_conversation(messages))
    assert split_conversation(messages, "turns") == split_by_turns(messages, 10, 2)


@pytest.mark.parametrize("method", ["tokens", "turns"])
def test_empty_conversation(method: str):
    assert split_conversation([], method) == []


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda m: split_by_tokens(m, max_tokens=0), "max_tokens"),
        (lambda m: split_by_tokens(m, max_tokens=MIN_MAX_TOKENS - 1, overlap_tokens=0), "max_"),
        (lambda m: split_by_tokens(m, max_tokens=100, overlap_tokens=-1), "overlap_tokens"),
        (lambda m: split_by_tokens(m, max_tokens=100, overlap_tokens=100), "overlap_tokens"),
        (lambda m: split_by_turns(m, max_turns=0, overlap_turns=0), "max_turns"),
        (lambda m: split_by_turns(m, max_turns=5, overlap_turns=5), "overlap_turns"),
        (lambda m: split_by_turns(m, max_turns=5, overlap_turns=-1), "overlap_turns"),
        (lambda m: split_conversation(m, "paragraphs"), "unknown split method"),
        (lambda m: split_conversation(m, "turns", max_turns=2), "overlap_turns"),
        (lambda m: split_conversation(m, max_tokens=50, overlap_tokens=50), "overlap_tokens"),
    ],
)
def test_bad_arguments_raise_value_error(call, fragment: str):
    for messages in ([], conversation(1, 4)):
        with pytest.raises(ValueError, match=fragment):
            call(messages)


def test_unused_method_limits_are_not_checked():
    messages = conversation(2, 6)
    assert split_conversation(messages, "turns", max_tokens=0)
    assert split_conversation(messages, "tokens", max_turns=0)


@pytest.mark.parametrize(
    "bad", [{"role": "user"}, {"content": "hi"}, {"role": "user", "content": None}]
)
def test_malformed_message_raises(bad: Mapping):
    with pytest.raises(ValueError, match="message 1"):
        split_by_tokens([{"role": "user", "content": "ok"}, bad])
