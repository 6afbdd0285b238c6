"""Benchmark of what one model call costs this process, at any conversation length.

    python bench/bench_calls.py [--part growth|bare|scale] [--path fast|stock] [--quick]

Each part runs on the fast path and then on the stock path (``GRAPH_DISTILL_STOCK=1``), side by
side in one table, unless ``--path`` picks one.

1. Growth: one 100-round conversation (``run_conversations``, distill off, ``-j 1``, as ``run -q``
   does it) against a server answering at once. The client's CPU time per call (this
   process's CPU seconds between one request leaving and the next; the server is another
   process): its median over rounds 80-100 over its median for rounds 5-25; of 3 runs, the
   one with the median ratio. Goal <= 1.5 on both paths. Shown beside it: the client's wall
   time between calls (from the server sending an answer whole to the next request
   arriving), which on a busy machine also holds the time other processes took the CPU.
2. Bare client: 2 conversations x 40 rounds at ``-j 1``, zero latency, wall / model calls,
   against a plain synchronous, non-streaming ``OpenAI().chat.completions.create(...)`` loop
   replaying the same requests (model, messages, temperature, max_tokens). Best of 3,
   interleaved. Goal <= 1.2 on the fast path.
3. Scale: 48 conversations x 40 rounds at ``-j 48``, each answer after 0.25 s. Wall span over
   the ideal 40 x 2 x 0.25 s = 20 s. Goal <= 1.25 on the fast path. Shown beside it: an
   asyncio loop on the bare ``openai.AsyncOpenAI`` client replaying the same requests as 48
   sequential chains, with the messages passed as usual and through ``extra_body``.

The fake server runs in a child process (its CPU work does not take this process's GIL). The
figures depend on the machine and on what else runs on it: compare ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai

from bench.bench_generate import (
    ChildServer,
    Row,
    Timing,
    bare_calls,
    generate,
    print_table,
    timed,
)
from graph_distill.cli.common import tune_gc_for_runs
from graph_distill.llm.throttle import ThrottledTransport

GROWTH_ROUNDS = 100
GROWTH_REPEATS = 3
EARLY, LATE = (5, 25), (80, 100)
GROWTH_GOAL = 1.5

BARE_CONVERSATIONS = 2
BARE_ROUNDS = 40
BARE_REPEATS = 3
BARE_GOAL = 1.2

SCALE_CONVERSATIONS = 48
SCALE_ROUNDS = 40
SCALE_LATENCY = 0.25
SCALE_IDEAL = SCALE_ROUNDS * 2 * SCALE_LATENCY
SCALE_GOAL = 1.25


def call_round(index: int) -> int:
    """The round of a conversation's ``index``-th call (round 1 has no user-simulator call:
    the first user message is the scenario's prompt)."""
    return (index + 1) // 2 + 1


def window_median(values: Sequence[float], rounds: tuple[int, int]) -> float:
    """Median of ``values[i] - values[i - 1]`` over the calls ``i`` of ``rounds`` (inclusive)."""
    low, high = rounds
    steps = [
        values[i] - values[i - 1] for i in range(1, len(values)) if low <= call_round(i) <= high
    ]
    return statistics.median(steps)


@contextmanager
def cpu_at_each_request() -> Iterator[list[float]]:
    """This process's CPU seconds as each model request leaves (the fake server runs in another
    process, so the differences are the client's own work per call, whatever else runs)."""
    marks: list[float] = []
    send = ThrottledTransport.handle_async_request

    async def marked(self: ThrottledTransport, *args: Any, **kwargs: Any) -> Any:
        marks.append(time.process_time())
        return await send(self, *args, **kwargs)

    ThrottledTransport.handle_async_request = marked  # type: ignore[method-assign]
    try:
        yield marks
    finally:
        ThrottledTransport.handle_async_request = send  # type: ignore[method-assign]


async def growth_part(quick: bool) -> list[Row]:
    rounds = 40 if quick else GROWTH_ROUNDS
    late = (rounds - 20, rounds)
    server = ChildServer(0.0)
    cpu: list[tuple[float, float]] = []
    wall: list[tuple[float, float]] = []
    try:
        await generate(server.base_url, 1, 3, 1)  # warm-up: imports, encodings, connections
        for _ in range(1 if quick else GROWTH_REPEATS):
            start = server.stats()["calls"]
            with cpu_at_each_request() as marks:
                await generate(server.base_url, 1, rounds, 1)
            cpu.append((window_median(marks, late), window_median(marks, EARLY)))
            times = server.timeline(start)
            # From the moment the server sent an answer whole to the next request's arrival.
            gaps = [0.0] + [times[i][0] - times[i - 1][1] for i in range(1, len(times))]
            waits = list(itertools.accumulate(gaps))
            wall.append((window_median(waits, late), window_median(waits, EARLY)))
    finally:
        server.stop()
    shape = f"1 x {rounds} rounds @1, {len(times)} calls"
    windows = f"rounds {late[0]}-{late[1]} vs {EARLY[0]}-{EARLY[1]}"
    return [
        _median_run_row(f"1. client CPU ms per call, {windows} ({shape}", cpu, GROWTH_GOAL),
        _median_run_row("   client wall ms between calls, same windows (", wall, None),
    ]


def _median_run_row(label: str, runs: Sequence[tuple[float, float]], goal: float | None) -> Row:
    """The run with the median late/early ratio, all runs' figures in the label."""
    late, early = sorted(runs, key=lambda pair: pair[0] / pair[1])[len(runs) // 2]
    shown = ", ".join(f"{1000 * a:.1f}/{1000 * b:.1f}" for a, b in runs)
    ratio = late / early
    return Row(
        f"{label}; runs {shown})",
        f"{1000 * late:.2f} ms",
        f"{1000 * early:.2f} ms",
        ratio,
        f"<= {goal}" if goal is not None else "info",
        ratio <= goal if goal is not None else None,
    )


def bare_sync_replay(base_url: str, bodies: Sequence[dict[str, Any]]) -> Timing:
    """What a plain synchronous ``OpenAI`` client takes to send ``bodies`` one by one."""
    client = openai.OpenAI(base_url=base_url, api_key="bench")
    began, cpu = time.perf_counter(), time.process_time()
    for body in bodies:
        client.chat.completions.create(
            model=body["model"],
            messages=body["messages"],
            temperature=body.get("temperature"),
            max_tokens=body.get("max_tokens"),
        )
    elapsed = Timing(time.perf_counter() - began, time.process_time() - cpu)
    client.close()
    return elapsed


async def bare_part(quick: bool) -> list[Row]:
    rounds = 20 if quick else BARE_ROUNDS
    server = ChildServer(0.0)
    pipeline: list[Timing] = []
    bare: list[Timing] = []
    try:
        await generate(server.base_url, 2, 3, 1)
        for _ in range(1 if quick else BARE_REPEATS):
            start = server.stats()["calls"]
            run = await timed(generate(server.base_url, BARE_CONVERSATIONS, rounds, 1))
            bodies = server.requests(start)
            pipeline.append(Timing(run.wall / len(bodies), run.cpu / len(bodies)))
            replay = bare_sync_replay(server.base_url, bodies)
            bare.append(Timing(replay.wall / len(bodies), replay.cpu / len(bodies)))
    finally:
        server.stop()
    best, base = min(t.wall for t in pipeline), min(t.wall for t in bare)
    best_cpu, base_cpu = min(t.cpu for t in pipeline), min(t.cpu for t in bare)
    runs = "/".join(f"{1000 * t.wall:.2f}" for t in pipeline)
    shape = f"{BARE_CONVERSATIONS} x {rounds} rounds @1, {len(bodies)} calls; runs {runs}"
    return [
        Row(
            f"2. ms per call, pipeline vs bare sync client ({shape})",
            f"{1000 * best:.2f} ms",
            f"{1000 * base:.2f} ms",
            best / base,
            f"<= {BARE_GOAL}",
            best / base <= BARE_GOAL,
        ),
        Row(
            "   client CPU ms per call, same runs",
            f"{1000 * best_cpu:.2f} ms",
            f"{1000 * base_cpu:.2f} ms",
            best_cpu / base_cpu,
        ),
    ]


async def extra_body_calls(
    client: openai.AsyncOpenAI, bodies: Sequence[dict[str, Any]], workers: int
) -> None:
    """``bare_calls`` with the messages sent through ``extra_body`` (the SDK leaves it as is)."""

    async def chain(part: Sequence[dict[str, Any]]) -> None:
        for body in part:
            await client.chat.completions.create(
                model=body["model"],
                messages=[],
                temperature=body.get("temperature"),
                max_tokens=body.get("max_tokens"),
                extra_body={"messages": body["messages"]},
            )

    await asyncio.gather(*(chain(bodies[i::workers]) for i in range(workers)))


async def scale_part(quick: bool) -> list[Row]:
    conversations = 12 if quick else SCALE_CONVERSATIONS
    server = ChildServer(SCALE_LATENCY)
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="bench", max_retries=0)
    try:
        await generate(server.base_url, 2, 2, 2)
        start = server.stats()["calls"]
        shape = (conversations, SCALE_ROUNDS, conversations)
        run = await timed(generate(server.base_url, *shape))
        bodies = server.requests(start)
        plain = await timed(bare_calls(client, bodies, conversations, False))
        through_extra = await timed(extra_body_calls(client, bodies, conversations))
    finally:
        await client.close()
        server.stop()
    ratio = run.wall / SCALE_IDEAL
    shape_text = f"{conversations} x {SCALE_ROUNDS} @{conversations}, {len(bodies)} calls"
    return [
        Row(
            f"3. span / ideal ({shape_text}, {SCALE_LATENCY} s per answer)",
            f"{run.wall:.2f} s",
            f"{SCALE_IDEAL:.2f} s",
            ratio,
            f"<= {SCALE_GOAL}",
            ratio <= SCALE_GOAL,
        ),
        Row(
            "   client CPU / span in that run (1.0 = CPU-bound)",
            f"{run.cpu:.2f} s",
            f"{run.wall:.2f} s",
            run.cpu / run.wall,
        ),
        Row(
            "   bare AsyncOpenAI loop, same requests / ideal",
            f"{plain.wall:.2f} s (CPU {plain.cpu:.1f} s)",
            f"{SCALE_IDEAL:.2f} s",
            plain.wall / SCALE_IDEAL,
        ),
        Row(
            "   bare loop, messages through extra_body / ideal",
            f"{through_extra.wall:.2f} s (CPU {through_extra.cpu:.1f} s)",
            f"{SCALE_IDEAL:.2f} s",
            through_extra.wall / SCALE_IDEAL,
        ),
    ]


PARTS: dict[str, Callable[[bool], Awaitable[list[Row]]]] = {
    "growth": growth_part,
    "bare": bare_part,
    "scale": scale_part,
}


# Goals that hold on the fast path alone (the stock path pays the SDK's work per message).
FAST_ONLY = ("2.", "3.")


def on_path(path: str, rows: list[Row]) -> list[Row]:
    """``rows`` labelled with their path; goals of the fast path alone shown as info."""
    marked = []
    for row in rows:
        label = f"[{path}] {row.figure}"
        if path == "stock" and row.figure.startswith(FAST_ONLY):
            row = Row(label, row.value, row.baseline, row.ratio, f"info ({row.goal})", None)
        else:
            row = Row(label, row.value, row.baseline, row.ratio, row.goal, row.passed)
        marked.append(row)
    return marked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(PARTS), action="append")
    parser.add_argument("--path", choices=("fast", "stock"), action="append")
    parser.add_argument("--quick", action="store_true", help="smaller shapes, for a smoke run")
    args = parser.parse_args()
    tune_gc_for_runs()  # as `run` and `distill` do (the baselines run in the same process)
    started = time.perf_counter()
    rows: list[Row] = []
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name in args.part or list(PARTS):
        for path in args.path or ("fast", "stock"):
            os.environ["GRAPH_DISTILL_STOCK"] = "1" if path == "stock" else "0"
            rows.extend(on_path(path, asyncio.run(PARTS[name](args.quick))))
            load = " ".join(f"{x:.2f}" for x in os.getloadavg())
            print(f"  {name} on the {path} path done; load average {load}", flush=True)
    print_table(rows)
    print(f"(total {time.perf_counter() - started:.1f} s)")
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
