import random
import re
from collections import Counter
from itertools import pairwise

import pytest

from graph_distill.conversation.noise import (
    NoiseResult,
    add_noise,
    noise_user_message,
    should_noise,
)

EDIT_KINDS = {
    "swap",
    "drop letter",
    "double letter",
    "keyboard",
    "drop article",
    "agreement",
    "drop apostrophe",
    "lowercase start",
    "double word",
}
EDIT = re.compile(r"(?P<kind>[a-z ]+): '(?P<before>.*?)'(?: -> '(?P<after>.*)')?")
WORD = re.compile(r"[A-Za-z]+(?:['’][A-Za-z]+)*")
LETTER_KINDS = {"swap", "drop letter", "double letter", "keyboard"}
KEY_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")

CORPUS = [
    "Hey, I'm trying to understand how the gradient descent works. Is it the same as "
    "backpropagation or are they different things?",
    "Thanks, that makes sense. But what does the learning rate actually do? "
    "I don't really get why it has to be small.",
    "Okay so I wrote a function to sort the list but it doesn't work when the list is empty. "
    "What am I doing wrong here?",
    "Can you explain the difference between a process and a thread? "
    "My teacher said they were basically the same but I think that is wrong.",
    "I have a question about the project structure. Where should the tests go, "
    "and does it matter if they're in the same folder?",
    "That's really helpful! One more thing: how do I make the code faster "
    "without rewriting everything from scratch?",
]

PROTECTED_TEXT = (
    "Setup.cfg is missing. Http://example.com is down. Print('it's') fails. "
    "Run `pip install the package` and then open main.py, it is in /usr/local/bin "
    "and also C:\\Users\\bob\\project. The docs are at https://example.com/the/guide?page=2 "
    "and www.example.org/about is the other one. I have version 3.11.4 and 42 items, "
    "also 3rd attempt failed. Mail me at first.last+tag@example.co.uk please. "
    "Here is the code:\n```python\ndef the_function(items):\n    return sorted(items)\n```\n"
    "and another one:\n~~~\nfor the item in the list: print(item)\n~~~\n"
    "Why does ``the `weird` span`` break when the config.yaml is missing and the "
    "value is 0.5 or 1e-3? Also the snake_case_name and foo() call are wrong. See "
    "<https://docs.example.com/the-page> or (bob@example.com) and it's in ~/the/dir, "
    "the .env file and ../the/other. Then this is cut off:\n```bash\nls the dir\ncat the file"
)
PROTECTED_PIECES = [
    "Setup.cfg",
    "Http://example.com",
    "Print('it's')",
    "`pip install the package`",
    "main.py,",
    "/usr/local/bin",
    "C:\\Users\\bob\\project.",
    "https://example.com/the/guide?page=2",
    "www.example.org/about",
    "3.11.4",
    "42",
    "3rd",
    "first.last+tag@example.co.uk",
    "```python\ndef the_function(items):\n    return sorted(items)\n```",
    "~~~\nfor the item in the list: print(item)\n~~~",
    "``the `weird` span``",
    "config.yaml",
    "0.5",
    "1e-3?",
    "snake_case_name",
    "foo()",
    "<https://docs.example.com/the-page>",
    "(bob@example.com)",
    "~/the/dir,",
    ".env",
    "../the/other.",
    "```bash\nls the dir\ncat the file",
]


def parse_edit(edit: str) -> tuple[str, str, str]:
    match = EDIT.fullmatch(edit)
    assert match, edit
    return match["kind"], match["before"], match["after"] or ""


def word_delta(before: str, after: str) -> Counter[str]:
    delta = Counter(WORD.findall(after))
    delta.subtract(WORD.findall(before))
    return delta


def noised_samples(
    texts: list[str], runs: int, max_edits: int = 3
) -> list[tuple[str, NoiseResult]]:
    return [
        (text, add_noise(text, random.Random(run), max_edits))
        for run in range(runs)
        for text in texts
    ]


def realized_rate(seed: int, rate: float, turns: int = 500) -> float:
    return sum(should_noise(seed, turn, rate) for turn in range(turns)) / turns


@pytest.mark.parametrize("seed", range(50))
def test_realized_rate_is_close_to_default_rate_for_every_seed(seed: int) -> None:
    assert abs(realized_rate(seed, 0.12) - 0.12) <= 0.03


@pytest.mark.parametrize("rate", [0.0, 0.05, 0.12, 0.5, 1.0])
def test_realized_rate_matches_other_rates(rate: float) -> None:
    for seed in range(20):
        assert abs(realized_rate(seed, rate) - rate) <= 0.03


def test_rate_zero_never_and_rate_one_always_noises() -> None:
    for seed in range(10):
        assert not any(should_noise(seed, turn, 0.0) for turn in range(200))
        assert all(should_noise(seed, turn, 1.0) for turn in range(200))


def test_noised_turns_differ_between_seeds_and_are_not_evenly_spaced() -> None:
    patterns = {
        tuple(turn for turn in range(100) if should_noise(seed, turn, 0.12)) for seed in range(20)
    }
    assert len(patterns) == 20
    gaps = {b - a for pattern in patterns for a, b in pairwise(pattern)}
    assert len(gaps) > 5
    first_block_counts = {
        sum(should_noise(seed, turn, 0.12) for turn in range(20)) for seed in range(20)
    }
    assert first_block_counts == {2, 3}


def test_every_turn_position_is_noised_for_some_seeds_and_not_others() -> None:
    seeds = range(400)
    for turn in range(40):
        share = sum(should_noise(seed, turn, 0.12) for seed in seeds) / len(seeds)
        assert 0.06 <= share <= 0.18, turn


@pytest.mark.parametrize("rate", [-0.01, 1.01, float("nan")])
def test_invalid_rate_raises(rate: float) -> None:
    with pytest.raises(ValueError):
        should_noise(1, 0, rate)
    with pytest.raises(ValueError):
        noise_user_message("hello there friend", seed=1, user_turn=0, rate=rate)


def test_invalid_turn_and_max_edits_raise() -> None:
    with pytest.raises(ValueError):
        should_noise(1, -1, 0.5)
    with pytest.raises(ValueError):
        add_noise("hello there friend", random.Random(0), max_edits=0)


def test_noise_is_deterministic_and_independent_of_call_history() -> None:
    def run(turns: list[int]) -> dict[int, NoiseResult | None]:
        return {
            turn: noise_user_message(CORPUS[turn % len(CORPUS)], seed=7, user_turn=turn, rate=0.5)
            for turn in turns
        }

    forward = run(list(range(40)))
    random.seed(12345)
    resumed = run(list(range(25, 40)))
    assert {turn: forward[turn] for turn in range(25, 40)} == resumed
    assert forward == run(list(reversed(range(40))))
    assert any(result is not None for result in forward.values())


def test_edits_depend_on_seed_and_text() -> None:
    text = CORPUS[0]
    by_seed = {
        noise_user_message(text, seed=seed, user_turn=0, rate=1.0).text for seed in range(10)
    }
    assert len(by_seed) > 5


def test_noise_user_message_follows_should_noise() -> None:
    for turn in range(60):
        result = noise_user_message(CORPUS[1], seed=3, user_turn=turn, rate=0.12)
        assert (result is not None) == should_noise(3, turn, 0.12)
        if result is not None:
            assert result.text != CORPUS[1]
            assert 1 <= len(result.edits) <= 3


def test_protected_spans_stay_byte_identical() -> None:
    for text, result in noised_samples([PROTECTED_TEXT], runs=400, max_edits=12):
        assert result.edits
        for piece in PROTECTED_PIECES:
            assert result.text.count(piece) == text.count(piece), (piece, result.edits)


def test_protected_spans_survive_noise_user_message_for_many_seeds() -> None:
    for seed in range(200):
        result = noise_user_message(PROTECTED_TEXT, seed=seed, user_turn=seed % 7, rate=1.0)
        assert result is not None
        for piece in PROTECTED_PIECES:
            assert piece in result.text


def test_nothing_editable_returns_text_unchanged() -> None:
    text = "```\nthe code here\n```\n`inline the code` https://example.com/the/page 42 a@b.io"
    for run in range(20):
        assert add_noise(text, random.Random(run)) == NoiseResult(text, [])
    assert noise_user_message(text, seed=1, user_turn=0, rate=1.0) is None


def test_every_edit_kind_appears_over_a_corpus() -> None:
    kinds = Counter(
        parse_edit(edit)[0] for _, result in noised_samples(CORPUS, 60) for edit in result.edits
    )
    assert set(kinds) == EDIT_KINDS
    typo_count = sum(kinds[kind] for kind in LETTER_KINDS)
    assert typo_count > sum(kinds.values()) / 2


def test_edit_count_is_mostly_one_and_bounded() -> None:
    counts = Counter(len(result.edits) for _, result in noised_samples(CORPUS, 100))
    assert set(counts) == {1, 2, 3}
    assert counts[1] > counts[2] > counts[3]
    for _, result in noised_samples(CORPUS, 20, max_edits=1):
        assert len(result.edits) == 1


def test_edits_account_for_every_change() -> None:
    for text, result in noised_samples([*CORPUS, PROTECTED_TEXT], 80):
        assert result.text.strip()
        assert result.text != text
        expected = Counter[str]()
        for edit in result.edits:
            _, before, after = parse_edit(edit)
            expected.update(word_delta(before, after))
        assert word_delta(text, result.text) == expected
        assert len(result.text.split()) - len(text.split()) == sum(
            len(parse_edit(edit)[2].split()) - len(parse_edit(edit)[1].split())
            for edit in result.edits
        )


def key_position(letter: str) -> tuple[int, float]:
    row = next(i for i, keys in enumerate(KEY_ROWS) if letter in keys)
    return row, KEY_ROWS[row].index(letter) + row / 2


def test_letter_slips_look_like_real_typos() -> None:
    seen = Counter[str]()
    for _, result in noised_samples(CORPUS, 60):
        for edit in result.edits:
            kind, before, after = parse_edit(edit)
            seen[kind] += 1
            if kind == "lowercase start":
                assert after == before[0].lower() + before[1:]
                continue
            if kind in LETTER_KINDS:
                assert before[0] == after[0]
            if kind == "swap":
                diff = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
                assert len(diff) == 2 and diff[1] == diff[0] + 1
                assert sorted(before) == sorted(after)
            elif kind == "drop letter":
                assert len(after) == len(before) - 1 >= 3
                assert any(before[:i] + before[i + 1 :] == after for i in range(len(before)))
            elif kind == "double letter":
                assert any(before[: i + 1] + before[i:] == after for i in range(len(before)))
            elif kind == "keyboard":
                diff = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
                assert len(diff) == 1
                (row_a, col_a), (row_b, col_b) = (
                    key_position(before[diff[0]]),
                    key_position(after[diff[0]]),
                )
                assert abs(row_a - row_b) <= 1 and abs(col_a - col_b) <= 1
            elif kind == "drop article":
                assert before in {"a", "an", "the"} and not after
            elif kind == "agreement":
                pairs = {("is", "are"), ("was", "were"), ("has", "have"), ("does", "do")}
                pairs |= {("doesn't", "don't"), ("isn't", "aren't"), ("wasn't", "weren't")}
                assert (before.lower(), after.lower()) in pairs | {(b, a) for a, b in pairs}
            elif kind == "drop apostrophe":
                assert after == before.replace("'", "")
            elif kind == "double word":
                assert after == f"{before} {before}"
    assert set(seen) == EDIT_KINDS


def test_edits_only_touch_words_of_three_letters_or_grammar_words() -> None:
    text = "So I am ok to go up at it if we do so."
    for _, result in noised_samples([text], 50):
        for edit in result.edits:
            kind, before, _ = parse_edit(edit)
            if kind in LETTER_KINDS:
                assert len(before) >= 3


def test_articles_are_only_dropped_before_a_word() -> None:
    text = "Pick the 3 options or a `flag` and the"
    for _, result in noised_samples([text], 100):
        assert not any(edit.startswith("drop article") for edit in result.edits)


def test_acronyms_and_camel_case_are_left_alone() -> None:
    text = "The API uses JSON and LangGraph with OpenAI models on iPhone devices"
    for _, result in noised_samples([text], 100):
        for word in ("API", "JSON", "LangGraph", "OpenAI", "iPhone"):
            assert word in result.text


def test_pronoun_i_is_never_lowercased() -> None:
    text = "I think so. I'm sure. I've tried."
    for _, result in noised_samples([text], 100):
        assert "lowercase start: 'I" not in " ".join(result.edits)
