"""Throughput of conversation splitting against tiktoken's bare encoding of the same text.

Run: python bench/bench_split.py [--tokens N]. Goal: split_by_tokens reaches at least half
of bare ``encode_ordinary`` throughput (tokens/s), measured in the same run, best of 3.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable

from graph_distill.distill.splitting import split_by_tokens, split_by_turns
from graph_distill.llm.tokens import encoding

GOAL_RATIO = 0.5
REPEATS = 3
WORDS = (
    "the a an of to in for on with is are was be it this that you we they I my your "
    "model training data gradient learning rate batch loss epoch layer network weights "
    "server request response timeout retry cache database query index table schema "
    "function variable list dictionary string integer error exception stack trace log "
    "config deploy container kubernetes pipeline build test coverage refactor module "
    "however because therefore actually basically probably definitely maybe honestly "
    "really quite pretty very just also still already yet again instead otherwise "
    "café naïve résumé 数据 模型 🙂 e.g. i.e. v2.1.0 /etc/hosts x=42 don't can't it's"
).split()


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(4, 22))]
    return " ".join(words).capitalize() + rng.choice([".", ".", ".", "?", "!"])


def paragraph(rng: random.Random) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randint(1, 7)))


def code_block(rng: random.Random) -> str:
    lines = [f"    result_{i} = compute(data[{i}], rate={rng.random():.3f})" for i in range(30)]
    return "```python\ndef run(data):\n" + "\n".join(lines) + "\n    return result_0\n```"


def message_text(rng: random.Random, role: str) -> str:
    roll = rng.random()
    if roll < 0.004:  # bigger than a 4000-token chunk: must be split inside
        return "\n\n".join(paragraph(rng) for _ in range(rng.randint(60, 150)))
    if role == "user" or roll < 0.3:
        return paragraph(rng)
    blocks = [paragraph(rng) for _ in range(rng.randint(2, 10))]
    if roll < 0.5:
        blocks.insert(rng.randint(0, len(blocks)), code_block(rng))
    if roll < 0.6:
        blocks.append("\n".join(f"- {sentence(rng)}" for _ in range(rng.randint(3, 8))))
    return "\n\n".join(blocks)


def synthetic_conversation(target_tokens: int, seed: int = 0) -> list[dict]:
    """Deterministic conversation of at least ``target_tokens`` content tokens."""
    rng = random.Random(seed)
    messages = [{"role": "system", "content": "You are a helpful assistant."}]
    total_tokens = 0
    while total_tokens < target_tokens:
        role = "user" if len(messages) % 2 == 1 else "assistant"
        content = message_text(rng, role)
        messages.append({"role": role, "content": content})
        total_tokens += len(encoding().encode_ordinary(content))
    return messages


def best_seconds(runs: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best of REPEATS per run, taken in interleaved rounds so load swings hit all alike."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(REPEATS):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=1_000_000, help="conversation size")
    args = parser.parse_args()

    messages = synthetic_conversation(args.tokens)
    text = "\n".join(message["content"] for message in messages)
    tokenizer = encoding()
    total_tokens = len(tokenizer.encode_ordinary(text))
    chunks = split_by_tokens(messages)
    split_parts = sum(1 for chunk in chunks for m in chunk.messages if "part" in m)
    print(
        f"conversation: {len(messages)} messages, {total_tokens:,} tokens, "
        f"{len(chunks)} token chunks ({split_parts} parts of oversized messages)"
    )

    seconds = best_seconds(
        {
            "encode": lambda: tokenizer.encode_ordinary(text),
            "tokens": lambda: split_by_tokens(messages),
            "turns": lambda: split_by_turns(messages),
        }
    )
    encode_rate, tokens_rate, turns_rate = (
        total_tokens / seconds[name] for name in ("encode", "tokens", "turns")
    )
    ratio = tokens_rate / encode_rate
    print(f"bare encode_ordinary: {encode_rate:>12,.0f} tokens/s")
    print(f"split_by_tokens:      {tokens_rate:>12,.0f} tokens/s")
    print(f"split_by_turns:       {turns_rate:>12,.0f} tokens/s")
    verdict = "met" if ratio >= GOAL_RATIO else "NOT met"
    print(f"ratio split_by_tokens / encode: {ratio:.2f} (goal >= {GOAL_RATIO}: {verdict})")


if __name__ == "__main__":
    main()
