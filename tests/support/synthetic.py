"""Conversation and distilled files made in code, for the report's tests and benchmark: varied
text from a seeded vocabulary, noise and topic-switch metadata, and notes citing their turns."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from graph_distill.distill.layout import render_chunk_notes, render_summary
from graph_distill.distill.splitting import split_conversation
from graph_distill.files.writing import distilled_path

_SYLLABLES = "ka lo mi ser tan vu pel dor ri ne bas kor fi lum tre gan sol pi mar qua".split()
SCENARIOS = ("Programming", "Cooking", "Travel")


def vocabulary(size: int = 4000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    found: dict[str, None] = {}
    while len(found) < size:
        found["".join(rng.choices(_SYLLABLES, k=rng.randint(2, 4)))] = None
    return list(found)


def sentence_text(rng: random.Random, vocab: list[str], words: int) -> str:
    return " ".join(rng.choices(vocab, k=words)).capitalize() + "."


def conversation_record(
    rng: random.Random,
    vocab: list[str],
    rounds: int,
    *,
    scenario: str = "Programming",
    user_words: int = 25,
    assistant_words: int = 120,
    noise_every: int = 8,
    switch_every: int = 15,
) -> dict[str, Any]:
    """One conversation file's record with noise on every ``noise_every``-th user turn and a
    topic switch every ``switch_every`` rounds."""
    messages = []
    noise = []
    for turn in range(rounds * 2):
        role = "user" if turn % 2 == 0 else "assistant"
        text = sentence_text(rng, vocab, user_words if role == "user" else assistant_words)
        if role == "user" and (turn // 2) % noise_every == noise_every - 1:
            noisy = text.replace(" ", "  ", 1)[:-1] + " teh."
            noise.append({"turn": turn, "clean": text, "edits": ["swap letters: 'the' -> 'teh'"]})
            text = noisy
        messages.append({"role": role, "content": text})
    switches = [
        {"turn": 2 * r, "reason": "the user repeated an earlier message", "to_topic": f"topic {r}"}
        for r in range(switch_every, rounds, switch_every)
    ]
    return {
        "id": f"id-{rng.randrange(10**9)}",
        "scenario": {"name": scenario, "description": f"{scenario} help"},
        "conversation": messages,
        "total_rounds": rounds,
        "created_at": "2026-01-11T19:43:32",
        "metadata": {
            "model": "synthetic",
            "scenario_key": scenario,
            "termination_reason": "target_rounds",
            "topic_switches": switches,
            "noise": noise,
            "usage": {"input_tokens": 1000, "output_tokens": 200, "cached_tokens": 0, "calls": 4},
        },
    }


def item_for(messages: list[dict[str, str]], turns: list[int], **extra: Any) -> dict[str, Any]:
    """A note item made of words of the turns it cites."""
    text = " ".join(" ".join(messages[t]["content"].split()[:4]) for t in turns)
    return {"text": text, "turns": turns, **extra}


def distilled_record(
    source: str,
    messages: list[dict[str, str]],
    *,
    max_turns: int = 10,
    cite: Any = None,
    raw_chunks: tuple[int, ...] = (),
) -> dict[str, Any]:
    """A distilled file whose chunks (turns method) cite the turns ``cite(turn)`` accepts
    (all by default), two items per chunk plus a filled one."""
    chunks = []
    for chunk in split_conversation(messages, "turns", max_turns=max_turns):
        low, high = chunk.turn_range
        wanted = [t for t in range(low, high + 1) if cite is None or cite(t)]
        notes = {
            "topic": f"chunk {chunk.index}",
            "core_questions": [
                item_for(messages, wanted[i : i + 2]) for i in range(0, len(wanted), 2)
            ],
            "key_insights": [
                item_for(messages, [low], cited="filled") | {"turns": list(range(low, high + 1))}
            ],
            "important_conclusions": [],
        }
        record = {
            "chunk_index": chunk.index,
            "turn_range": [low, high],
            "original_messages": [
                {"role": m["role"], "content": m["content"]} for m in chunk.messages
            ],
            "distilled_content": render_chunk_notes(notes),
            "notes": notes,
            "status": "ok",
        }
        if chunk.index in raw_chunks:
            record.update(notes={**notes, "core_questions": [], "key_insights": []}, status="raw")
        chunks.append(record)
    final = {**chunks[0]["notes"], "topic": "overall"}
    return {
        "source": source,
        "total_chunks": len(chunks),
        "distilled_chunks": chunks,
        "final_summary": render_summary(final),
        "final_notes": final,
        "metadata": {"model": "synthetic", "usage": {"input_tokens": 500, "calls": 2}},
    }


def write_dataset(
    root: Path, count: int, rounds: int, *, seed: int = 0, vocab_size: int = 4000
) -> tuple[Path, Path]:
    """``count`` conversation files of ``rounds`` rounds and their distilled files under
    ``root``; (conversation dir, distilled dir)."""
    rng = random.Random(seed)
    vocab = vocabulary(vocab_size, seed)
    conversations, distilled = root / "conversations", root / "distilled"
    conversations.mkdir(parents=True, exist_ok=True)
    distilled.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        scenario = SCENARIOS[number % len(SCENARIOS)]
        record = conversation_record(rng, vocab, rounds, scenario=scenario)
        path = conversations / f"{scenario}_20260111_{number:06d}.json"
        write_json(path, record)
        data = distilled_record(str(path), record["conversation"])
        write_json(distilled_path(distilled, path.stem), data)
    return conversations, distilled


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path
