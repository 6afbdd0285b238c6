"""Benchmark: conversation generation on a faulty server against the same run on a sound one.

    python bench/bench_faults.py [--conversations 16 4] [--rounds 6] [--latency 0.1] [--pairs 3]

Each pair is two runs of ``run_conversations`` (distill off, concurrency = conversations, every
call answered after ``latency``): one against a sound fake server, then the same run (same
seed, scenarios and rounds) against one that injects the faults of tests/test_faults.py: 10%
429s with Retry-After, 5% 500s, 5% dropped connections, 20% half replies. Both servers live in
one child process, so their CPU work does not compete with the client's interpreter.

Every request carries its conversation's tag (scenario texts hold one), so the servers' arrival
times give each conversation's timeline. A failed request costs its conversation the time until
the conversation's next request, the retry: the failed attempt, then the Retry-After wait (429)
or the client's back-off (500, dropped connection). Half replies cost nothing here: prose is
taken as it comes (only distillation can tell a half JSON reply). The prediction is the sound
run's wall time with the slowest conversation lengthened by exactly those costs:

    predicted = sound wall - max(sound chain) + max(sound chain + fault cost), per conversation

Goal: faulted wall <= 1.10 x predicted, i.e. no time lost beyond the waits and retried calls.
Two shapes by default: 16 conversations at once keep a 2-core client CPU-bound, so waits overlap
other conversations' work and the faulted run beats the prediction; 4 at once are bound by
latency, where the prediction should hold almost exactly.
Also shown per pair: the faulted / sound wall ratio, the fault costs split by kind, the time the
conversations lost beyond their own fault costs (``unexplained``), and the run-wide back-off
pauses taken (none are expected at these rates).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing
import random
import re
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_generate import Row, print_table, realistic_responder

from graph_distill.context import ConversationContext
from graph_distill.conversation.scenarios import Scenario, builtin_scenarios, pick_scenario
from graph_distill.run.driver import RunPlan, conversation_seed
from graph_distill.run.generation import run_conversations
from graph_distill.run.progress import Reporter
from tests.support.fake_openai import FakeOpenAIServer, FaultRates, message_text

FAULTS = FaultRates(
    rate_429=0.10, rate_500=0.05, rate_drop=0.05, rate_broken_json=0.20, retry_after=0.2, seed=9
)
RETRIED = ("429", "500", "drop")
GOAL = 1.10
POOL_SIZE = 1024
TAG = re.compile(r"\[conversation (\d+)\]")


# -- tagged conversations


def tagged_pool(size: int) -> list[Scenario]:
    """Copies of the built-in scenarios whose role and description name a tag."""
    builtins = builtin_scenarios()
    pool = []
    for number in range(size):
        base = builtins[number % len(builtins)]
        mark = f" [conversation {number}]"
        pool.append(
            replace(
                base,
                key=f"{base.key}{number}",
                description=base.description + mark,
                ai_role=base.ai_role + mark,
            )
        )
    return pool


def distinct_seed(pool: Sequence[Scenario], count: int, start: int = 7) -> int:
    """The first run seed from ``start`` whose conversations all draw different scenarios."""
    seed = start
    while True:
        keys = {
            pick_scenario(pool, random.Random(conversation_seed(seed, i))).key for i in range(count)
        }
        if len(keys) == count:
            return seed
        seed += 1


def tag_of(body: dict) -> int:
    found = TAG.search(message_text(body["messages"][0]))
    if found is None:
        raise RuntimeError("a request without a conversation tag")
    return int(found.group(1))


# -- the servers, in a child process


@dataclass(frozen=True)
class Arrival:
    at: float
    tag: int
    fault: str | None


def _serve(conn: Connection, latency: float) -> None:
    sound = FakeOpenAIServer(realistic_responder(), latency=latency).start()
    faulty = FakeOpenAIServer(realistic_responder(), latency=latency, faults=FAULTS).start()
    servers = {"sound": sound, "faulty": faulty}
    conn.send({name: server.base_url for name, server in servers.items()})
    while (command := conn.recv()) != "stop":
        name, start = command
        records = servers[name].records[start:]
        conn.send([Arrival(r.received_at, tag_of(r.body), r.fault) for r in records])
    for server in servers.values():
        server.stop()


class Servers:
    def __init__(self, latency: float) -> None:
        self.conn, child_conn = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=_serve, args=(child_conn, latency), daemon=True
        )
        self.process.start()
        self.base_urls: dict[str, str] = self.conn.recv()
        self.seen = Counter[str]()

    def arrivals(self, name: str) -> list[Arrival]:
        """Requests ``name`` received since the last call."""
        self.conn.send((name, self.seen[name]))
        arrivals: list[Arrival] = self.conn.recv()
        self.seen[name] += len(arrivals)
        return arrivals

    def stop(self) -> None:
        self.conn.send("stop")
        self.process.join(10)


# -- runs


@dataclass(frozen=True)
class Shape:
    conversations: int
    rounds: int
    pool: Sequence[Scenario]
    seed: int


async def _generate(base_url: str, shape: Shape, count: int) -> tuple[float, int]:
    """One run: wall seconds, and back-off pauses the run's throttle took."""
    with tempfile.TemporaryDirectory() as folder:
        plan = RunPlan(
            count=count,
            conversation_dir=Path(folder),
            distilled_dir=Path(folder),
            scenarios=shape.pool,
            seed=shape.seed,
            concurrency=count,
            distill=False,
        )
        ctx = ConversationContext(
            base_url=base_url,
            api_key="bench",
            model="fake-model",
            min_rounds=shape.rounds,
            max_rounds=shape.rounds,
        )
        began = time.perf_counter()
        summary = await run_conversations(plan, ctx, Reporter())
        wall = time.perf_counter() - began
    if summary.failures or summary.rounds != count * shape.rounds:
        raise RuntimeError(f"bad run: {summary.failures or summary.closing_line()}")
    pauses = summary.resources.stats().pauses
    return wall, len(pauses)


def measured_run(servers: Servers, name: str, shape: Shape) -> tuple[float, int, list[Arrival]]:
    """A run in its own event loop (its own clients and throttle), after a small warm-up."""

    async def warm_then_run() -> tuple[float, int]:
        await _generate(servers.base_urls[name], replace(shape, rounds=2), 2)
        servers.arrivals(name)  # the warm-up's requests are not measured
        return await _generate(servers.base_urls[name], shape, shape.conversations)

    wall, pauses = asyncio.run(warm_then_run())
    return wall, pauses, servers.arrivals(name)


# -- timelines


def timelines(arrivals: Sequence[Arrival]) -> dict[int, list[Arrival]]:
    by_tag: dict[int, list[Arrival]] = defaultdict(list)
    for arrival in sorted(arrivals, key=lambda a: a.at):
        by_tag[arrival.tag].append(arrival)
    return by_tag


def chain(line: Sequence[Arrival]) -> float:
    return line[-1].at - line[0].at


def fault_costs(line: Sequence[Arrival]) -> Counter[str]:
    """Seconds each retried fault kind cost this conversation (failed attempt + wait)."""
    costs = Counter[str]()
    for failed, retry in itertools.pairwise(line):
        if failed.fault in RETRIED:
            costs[failed.fault] += retry.at - failed.at
    return costs


@dataclass(frozen=True)
class PairResult:
    sound_wall: float
    faulty_wall: float
    predicted: float
    costs_on_slowest: Counter[str]
    total_costs: Counter[str]
    faults: Counter[str]
    unexplained_max: float
    unexplained_mean: float
    pauses: int

    @property
    def ratio(self) -> float:
        return self.faulty_wall / self.predicted


def compare(
    sound: tuple[float, int, list[Arrival]], faulty: tuple[float, int, list[Arrival]]
) -> PairResult:
    sound_lines, faulty_lines = timelines(sound[2]), timelines(faulty[2])
    if set(sound_lines) != set(faulty_lines):
        raise RuntimeError("the two runs did not hold the same conversations")
    costs = {tag: fault_costs(line) for tag, line in faulty_lines.items()}
    grown = {tag: chain(sound_lines[tag]) + costs[tag].total() for tag in sound_lines}
    slowest = max(grown, key=lambda tag: grown[tag])
    sound_longest = max(chain(line) for line in sound_lines.values())
    unexplained = [
        chain(faulty_lines[tag]) - chain(sound_lines[tag]) - costs[tag].total()
        for tag in sound_lines
    ]
    total = Counter[str]()
    for cost in costs.values():
        total.update(cost)
    return PairResult(
        sound_wall=sound[0],
        faulty_wall=faulty[0],
        predicted=sound[0] - sound_longest + grown[slowest],
        costs_on_slowest=costs[slowest],
        total_costs=total,
        faults=Counter(a.fault for a in faulty[2] if a.fault),
        unexplained_max=max(unexplained),
        unexplained_mean=statistics.mean(unexplained),
        pauses=sound[1] + faulty[1],
    )


def rows_for(label: str, result: PairResult, calls: int) -> list[Row]:
    faults = ", ".join(f"{kind} x{count}" for kind, count in sorted(result.faults.items()))
    slowest = ", ".join(
        f"{kind} {seconds:.2f} s" for kind, seconds in sorted(result.costs_on_slowest.items())
    )
    spent = ", ".join(
        f"{kind} {seconds:.2f} s" for kind, seconds in sorted(result.total_costs.items())
    )
    return [
        Row(
            f"{label}: faulty wall / predicted ({calls} calls; {faults})",
            f"{result.faulty_wall:.2f} s",
            f"{result.predicted:.2f} s",
            result.ratio,
            f"<= {GOAL}",
            result.ratio <= GOAL,
        ),
        Row(
            "   faulty wall / sound wall",
            f"{result.faulty_wall:.2f} s",
            f"{result.sound_wall:.2f} s",
            result.faulty_wall / result.sound_wall,
        ),
        Row(
            f"   fault cost on the conversation predicted slowest ({slowest or 'none'})",
            f"{result.costs_on_slowest.total():.2f} s",
            f"{result.faulty_wall - result.sound_wall:.2f} s",
            None,
        ),
        Row(f"   fault cost, all conversations ({spent})", "", "", None),
        Row(
            f"   unexplained time per conversation, max / mean (back-off pauses: {result.pauses})",
            f"{result.unexplained_max:.2f} s",
            f"{result.unexplained_mean:.2f} s",
            None,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, nargs="+", default=[16, 4])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    started = time.perf_counter()
    pool = tagged_pool(POOL_SIZE)
    servers = Servers(args.latency)
    rows: list[Row] = []
    try:
        for count in args.conversations:
            shape = Shape(count, args.rounds, pool, distinct_seed(pool, count))
            for index in range(1, args.pairs + 1):
                sound = measured_run(servers, "sound", shape)
                faulty = measured_run(servers, "faulty", shape)
                label = f"{count}x{args.rounds} @{count}, pair {index}"
                rows += rows_for(label, compare(sound, faulty), len(faulty[2]))
    finally:
        servers.stop()
    print_table(rows)
    print(
        f"(latency {args.latency} s, Retry-After {FAULTS.retry_after} s; "
        f"total {time.perf_counter() - started:.1f} s)"
    )
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
