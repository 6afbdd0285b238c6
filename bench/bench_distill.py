"""Benchmark: distill a 40-chunk conversation with max_concurrency 16 against a fake server that
answers each request after 200 ms, and compare the wall time with the ideal.

    python bench/bench_distill.py [--chunks 40] [--concurrency 16] [--latency 0.2] [--runs 5]

The fake server runs in its own process, as a real server would, so its CPU time does not
compete with the graph's for one interpreter. Ideals, each wave one latency long:
- waves: ceil(chunks / concurrency) map waves plus the reduce's waves (its collapse calls of
  one round run side by side, then the final reduce call);
- issue: one map wave plus the same reduce waves (out of reach when the map needs more waves).
Goal: wall / ideal <= 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing
import os
import statistics
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph_distill.context import DistillContext
from graph_distill.distill.graph import distill_graph
from graph_distill.llm.prompting import load_prompt
from graph_distill.llm.resources import RunResources, with_resources
from tests.support.fake_openai import FakeOpenAIServer

MAX_TURNS = 10
OVERLAP_TURNS = 2  # split_conversation's default for the turns method
GOAL_RATIO = 1.5
KIND_MARKS = {
    kind: load_prompt(f"distill_{kind}").splitlines()[0] for kind in ("chunk", "collapse", "reduce")
}


def conversation(chunks: int) -> list[dict[str, str]]:
    """Enough messages for ``chunks`` chunks of MAX_TURNS messages (turns method)."""
    count = chunks * (MAX_TURNS - OVERLAP_TURNS) + OVERLAP_TURNS
    return [
        {
            "role": ("user", "assistant")[turn % 2],
            "content": f"Message {turn} on subject{turn}: "
            + "a few sentences of ordinary chat text that carry some detail. " * 6,
        }
        for turn in range(count)
    ]


def request_kind(body: dict[str, Any]) -> str:
    system = str(body["messages"][0]["content"])
    return next((kind for kind, mark in KIND_MARKS.items() if mark in system), "other")


def serve(connection: Connection, latency: float) -> None:
    """Child process: run the fake server; on each request report (kinds of the requests so
    far, server CPU seconds) until told to stop."""
    with FakeOpenAIServer(latency=latency) as server:
        connection.send(server.base_url)
        while connection.recv() != "stop":
            kinds = [request_kind(body) for body in server.requests]
            connection.send((kinds, time.process_time()))


class RemoteServer:
    def __init__(self, latency: float) -> None:
        self._connection, child = multiprocessing.Pipe()
        context = multiprocessing.get_context("spawn")
        self._process = context.Process(target=serve, args=(child, latency), daemon=True)
        self._process.start()
        self.base_url: str = self._connection.recv()

    def report(self) -> tuple[list[str], float]:
        self._connection.send("report")
        return self._connection.recv()

    def close(self) -> None:
        self._connection.send("stop")
        self._process.join()


async def run_once(
    base_url: str, messages: list[dict[str, str]], concurrency: int
) -> dict[str, Any]:
    ctx = DistillContext(
        base_url=base_url,
        api_key="bench",
        model="fake-model",
        split_method="turns",
        max_turns=MAX_TURNS,
    )
    # As the runner does: one run's HTTP client and models for all its calls.
    async with RunResources() as resources:
        config = with_resources({"max_concurrency": concurrency}, resources)
        return await distill_graph.ainvoke({"conversation": messages}, config, context=ctx)


async def measure(
    server: RemoteServer, chunks: int, concurrency: int, runs: int
) -> tuple[list[float], list[float], list[float], Counter[str]]:
    messages = conversation(chunks)
    await run_once(server.base_url, conversation(1), concurrency)  # warm-up: client, encodings
    walls, client_cpu, server_cpu = [], [], []
    kinds: Counter[str] = Counter()
    for _ in range(runs):
        before_kinds, before_server = server.report()
        before_client, started = time.process_time(), time.perf_counter()
        result = await run_once(server.base_url, messages, concurrency)
        walls.append(time.perf_counter() - started)
        client_cpu.append(time.process_time() - before_client)
        after_kinds, after_server = server.report()
        server_cpu.append(after_server - before_server)
        kinds = Counter(after_kinds[len(before_kinds) :])
        assert len(result["distilled_chunks"]) == chunks
        assert all(chunk["status"] == "ok" for chunk in result["distilled_chunks"])
    return walls, client_cpu, server_cpu, kinds


def report(chunks: int, concurrency: int, latency: float, measured: tuple[Any, ...]) -> None:
    walls, client_cpu, server_cpu, kinds = measured
    wall = statistics.median(walls)
    map_waves = math.ceil(chunks / concurrency)
    # The bench's notes need at most one collapse round; its calls run side by side.
    reduce_waves = math.ceil(kinds["collapse"] / concurrency) + kinds["reduce"]
    ideal_waves = (map_waves + reduce_waves) * latency
    ideal_issue = (1 + reduce_waves) * latency
    calls = sum(kinds.values())
    print(f"chunks {chunks}, max_concurrency {concurrency}, latency {latency * 1000:.0f} ms")
    print(
        f"model calls per run: {calls} ({kinds['chunk']} map, {kinds['collapse']} collapse, "
        f"{kinds['reduce']} reduce)"
    )
    print(f"wall: median {wall:.3f} s, runs {', '.join(f'{w:.3f}' for w in walls)}")
    print(
        f"CPU per run (median): graph process {statistics.median(client_cpu):.3f} s, "
        f"fake server {statistics.median(server_cpu):.3f} s; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    print(
        f"ideal (waves) = ({map_waves} map + {reduce_waves} reduce) x {latency:g} s = "
        f"{ideal_waves:.3f} s -> ratio {wall / ideal_waves:.2f} "
        f"(goal <= {GOAL_RATIO}: {'met' if wall / ideal_waves <= GOAL_RATIO else 'missed'})"
    )
    print(
        f"ideal (issue) = (1 map + {reduce_waves} reduce) x {latency:g} s = "
        f"{ideal_issue:.3f} s -> ratio {wall / ideal_issue:.2f}"
        + (
            f" (at best {ideal_waves / ideal_issue:.2f} with {map_waves} map waves)"
            if map_waves > 1
            else ""
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.latency <= 0:
        parser.error("--latency must be positive")
    server = RemoteServer(args.latency)
    try:
        measured = asyncio.run(measure(server, args.chunks, args.concurrency, args.runs))
    finally:
        server.close()
    report(args.chunks, args.concurrency, args.latency, measured)


if __name__ == "__main__":
    main()
