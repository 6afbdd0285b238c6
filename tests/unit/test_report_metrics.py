"""The report's figures on crafted data with known answers: a planted near-duplicate, a
degenerate loop, an uncited middle, an invalid and an unsupported citation, a raw chunk."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from graph_distill.report.build import analyze
from graph_distill.report.dataset import Dataset, read_reference
from tests.support.synthetic import item_for, sentence_text, vocabulary, write_json

PRAISE_USER = "Thank you so much, that is wonderful and really helpful for me!"
PRAISE_REPLY = "You are very welcome! I am so glad this helps, what a great question that was."


def unique_messages(rng: random.Random, rounds: int) -> list[dict[str, str]]:
    vocab = vocabulary(3000, seed=rng.randrange(1000))
    return [
        {"role": role, "content": sentence_text(rng, vocab, 30)}
        for _ in range(rounds)
        for role in ("user", "assistant")
    ]


def record(messages: list[dict[str, str]], noise: list[dict[str, Any]], name: str) -> dict:
    return {
        "id": name,
        "scenario": {"name": "Crafted"},
        "conversation": messages,
        "total_rounds": len(messages) // 2,
        "created_at": "2026-01-01T00:00:00",
        "metadata": {"termination_reason": "target_rounds", "noise": noise, "topic_switches": []},
    }


def chunk(index: int, low: int, high: int, items: list[dict], status: str = "ok") -> dict:
    notes = {"topic": "t", "core_questions": items, "key_insights": [], "important_conclusions": []}
    return {
        "chunk_index": index,
        "turn_range": [low, high],
        "notes": notes,
        "status": status,
        "distilled_content": "x",
    }


def distilled(source: str, chunks: list[dict]) -> dict:
    return {"source": source, "distilled_chunks": chunks, "final_summary": "summary words here"}


@pytest.fixture
def crafted(tmp_path: Path) -> Dataset:
    rng = random.Random(7)
    conversations, out = tmp_path / "c", tmp_path / "d"
    first = unique_messages(rng, 12)
    noise = [{"turn": 4, "clean": first[4]["content"], "edits": ["drop article: 'the'"]}]
    twin = [dict(m) for m in first]
    twin[7]["content"] = twin[7]["content"].replace(" ", " zz ", 1)
    loop = unique_messages(rng, 4)
    loop += [
        {"role": r, "content": t}
        for _ in range(6)
        for r, t in (("user", PRAISE_USER), ("assistant", PRAISE_REPLY))
    ]
    write_json(conversations / "a_first.json", record(first, noise, "first"))
    write_json(conversations / "b_twin.json", record(twin, noise, "twin"))
    write_json(conversations / "c_loop.json", record(loop, [], "loop"))
    sharegpt = [
        {"from": ("human", "gpt")[i % 2], "value": m["content"]}
        for i, m in enumerate(unique_messages(rng, 12))
    ]
    write_json(conversations / "d_imported.json", {"conversations": sharegpt})
    write_json(conversations / "run_report.json", {"phases": {"total": {"cost_usd": 0.25}}})
    cited = [item_for(first, [t, t + 1]) for t in (0, 2, 4)]
    invalid = item_for(first, [15])
    made_up = {"text": "Quantum zebra marmalade orchestras", "turns": [2]}
    filled = {"text": "whole chunk", "turns": list(range(12)), "cited": "filled"}
    late = [item_for(first, [t, t + 1]) for t in (18, 20, 22)]
    chunks = [chunk(0, 0, 11, [*cited, invalid, made_up, filled]), chunk(1, 12, 23, late)]
    write_json(out / "distilled_a_first.json", distilled("c/a_first.json", chunks))
    loop_chunks = [chunk(0, 0, 9, [], "raw"), chunk(1, 10, 19, [item_for(loop, [19])])]
    write_json(out / "distilled_c_loop.json", distilled("c/c_loop.json", loop_chunks))
    return Dataset(conversations, out)


def test_profile_counts_and_typo_rate(crafted: Dataset) -> None:
    figures = analyze(crafted).figures
    assert figures["conversations"] == 4
    assert figures["rounds"]["total"] == 12 + 12 + 10 + 12
    assert figures["scenarios"] == {"Crafted": 3, "(imported)": 1}
    # One noised user message in each of the two 12-round files; the loop records none.
    assert figures["typo_rate"] == round(2 / 34, 4)
    assert figures["typos"]["edit_kinds"] == {"drop article": 2}
    assert figures["usage"]["cost_usd"] == 0.25
    assert figures["distilled_files"] == 2


def test_the_planted_near_duplicate_is_found(crafted: Dataset) -> None:
    near = analyze(crafted).figures["near_duplicates"]
    assert [(p["a"], p["b"]) for p in near["pairs"]] == [("a_first", "b_twin")]
    assert near["duplicates"] == ["b_twin"]


def test_the_praise_loop_is_degenerate(crafted: Dataset) -> None:
    analysis = analyze(crafted)
    degeneration = analysis.figures["degeneration"]
    # Rounds 6-10 of the loop repeat round 5; nothing else repeats.
    assert degeneration["degenerate_rounds"] == 5
    assert degeneration["rounds"] == 46
    assert analysis.degenerate == {"c_loop"}


def test_coverage_sees_the_uncited_middle(crafted: Dataset) -> None:
    figures = analyze(crafted).figures
    coverage = figures["coverage"]
    # first: turns 0-5 and 18-23 of 24 (the filled item counts as uncited); loop: turn 19 of 20.
    assert (coverage["cited_turns"], coverage["turns"]) == (13, 44)
    by_position = figures["coverage_by_position"]
    assert by_position[3:7] == [0.0, 0.0, 0.0, 0.0]
    # First tenth: turns 0-2 of the first conversation (cited), 0-1 of the loop (not).
    assert by_position[0] == 0.6


def test_citation_validity_counts_invalid_unsupported_and_filled(crafted: Dataset) -> None:
    validity = analyze(crafted).figures["citation_validity"]
    assert validity["items"] == 10
    assert validity["filled"] == 1
    assert validity["model_cited"] == 9
    # 7 well-cited items of 2 turns but the loop's of 1, the invalid item and the made-up one.
    assert (validity["citations"], validity["in_range"]) == (15, 14)
    # The invalid item cites nothing in its chunk; the made-up one's words are not in turn 2.
    assert validity["supported_items"] == 7
    assert validity["uncited_share"] == 0.1


def test_raw_chunks_are_counted(crafted: Dataset) -> None:
    assert analyze(crafted).figures["raw_chunks"] == {"chunks": 4, "raw": 1, "share": 0.25}


def test_reference_users_beside_simulated_ones(crafted: Dataset, tmp_path: Path) -> None:
    real = [
        [
            {"role": "user", "content": "how do i fix this?"},
            {"role": "assistant", "content": "Try restarting."},
            {"role": "user", "content": "it still brakes"},
            {"role": "assistant", "content": "Then reinstall."},
        ]
    ]
    path = write_json(tmp_path / "real.json", [{"messages": real[0]}, {"messages": []}])
    found = read_reference(path)
    assert found.skipped == [f"--reference {path} record 1: no message has text"]
    figures = analyze(crafted, reference=found).figures
    assert figures["inputs"]["skipped"] == found.skipped
    reference = figures["reference"]
    assert reference["real"]["user_messages"] == 2
    assert reference["real"]["question_share"] == 0.5
    assert reference["simulated"]["user_messages"] == 12 + 12 + 10 + 12
    assert reference["simulated"]["question_share"] == 0.0


def test_worker_processes_give_the_same_figures(crafted: Dataset) -> None:
    alone = analyze(crafted).figures
    shared = analyze(crafted, workers=2).figures
    for figures in (alone, shared):
        figures.pop("generated_at")
    assert shared == alone
