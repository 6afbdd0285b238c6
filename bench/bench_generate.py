"""Benchmark of conversation generation (``run_conversations``, distill off) on the fake server.

    python bench/bench_generate.py [--in-process-server] [--profile PART]

1. Latency hiding: 16 conversations x 8 rounds at concurrency 16, each call answered after
   100 ms. Wall / ideal, ideal = 8 rounds x 2 calls x 100 ms = 1.6 s (the real chain is
   15 calls, as the first user message is the scenario's prompt). Goal <= 1.3. Also shown: the
   client's CPU time in that run (near the wall time: CPU-bound) and a bare SDK replay of the
   same requests at the same concurrency, the floor this machine allows.
2. Per-call overhead: the pipeline at zero latency (wall / model calls) against a bare
   ``openai.AsyncOpenAI`` loop replaying the same requests (streaming off), same concurrency,
   interleaved, best of 3. Goal <= 1.5. A streaming bare loop is shown for the split.
3. Prefix caching: 4 conversations x 40 rounds with realistic reply sizes, at the default history
   budget and at smaller ones that force cuts; cached / prompt tokens from ``server.stats``.
   Goal >= 0.85 at the default budget; the smaller budgets show what cuts cost (at 4000 tokens
   the window holds only 4-12 rounds, so each call's new tail alone is ~10% of its prompt). Also
   shown: the share left uncached by the calls right after a history cut.

Parts 1 and 2 run the fake server in a child process by default, so its CPU work (JSON, SSE,
prompt tokenizing for the prefix cache) does not take the client's GIL; ``--in-process-server``
keeps it in this process as the tests do. ``--profile`` runs one part under cProfile instead.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Protocol

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openai

from graph_distill.cli.common import tune_gc_for_runs
from graph_distill.context import ConversationContext
from graph_distill.conversation.scenarios import builtin_scenarios
from graph_distill.llm.prompting import load_prompt
from graph_distill.run.driver import RunPlan
from graph_distill.run.generation import run_conversations
from graph_distill.run.progress import Reporter
from graph_distill.run.summary import RunSummary
from tests.support.fake_openai import FakeOpenAIServer, PrefixCache, message_text, prompt_tokens
from tests.support.roles import RoleResponder, Script

LATENCY = 0.1
LATENCY_CONVERSATIONS = 16
LATENCY_ROUNDS = 8
LATENCY_REPEATS = 2
IDEAL_SECONDS = LATENCY_ROUNDS * 2 * LATENCY
CHAIN_SECONDS = (LATENCY_ROUNDS * 2 - 1) * LATENCY
LATENCY_GOAL = 1.3

OVERHEAD_CONVERSATIONS = 4
OVERHEAD_ROUNDS = 10
OVERHEAD_REPEATS = 3
OVERHEAD_GOAL = 1.5

CACHE_CONVERSATIONS = 4
CACHE_ROUNDS = 40
CACHE_BUDGETS = (ConversationContext.history_budget_tokens, 8000, 4000)
CACHE_GOAL = 0.85

USER_WORDS = (20, 40)
ASSISTANT_WORDS = (150, 250)
# Plain content words: no acknowledgement, goodbye or "AI" words, so no stall or role break fires.
VOCABULARY = (
    "model training data gradient learning rate batch loss epoch layer network weights server "
    "request response timeout retry cache database query index table schema function variable "
    "list dictionary string integer error exception stack trace log config deploy container "
    "pipeline build test coverage refactor module garden recipe budget schedule ledger bridge "
    "sensor harbor lesson archive compass engine fabric journal lantern market orbit rhythm "
    "voyage workshop kitchen bicycle mortgage invoice tenant landlord vaccine symptom dosage "
    "chapter essay thesis citation grammar vocabulary exam semester tutor lecture physics "
    "chemistry protein enzyme orbit galaxy telescope climate glacier river soil compost seed "
    "the a of to in for on with is are was be it this that we they my your because however "
    "then when which while after before under over between during without against toward "
    "quickly slowly carefully often rarely usually probably mostly partly clearly roughly "
    "measure compare adjust reduce increase check split merge sort filter rotate balance "
    "store fetch parse render train tune evaluate predict sample average scale normalize"
).split()


def prose(rng: random.Random, low: int, high: int) -> str:
    words = [rng.choice(VOCABULARY) for _ in range(rng.randint(low, high))]
    sentences, start = [], 0
    while start < len(words):
        end = start + rng.randint(8, 18)
        sentences.append(" ".join(words[start:end]).capitalize() + rng.choice(".?."))
        start = end
    return " ".join(sentences)


def prose_script(role: str, low: int, high: int) -> Script:
    return lambda n: prose(random.Random(f"{role}:{n}"), low, high)


def realistic_responder() -> RoleResponder:
    """Users write 20-40 words, the assistant 150-250, each reply different."""
    return RoleResponder(
        user=prose_script("user", *USER_WORDS),
        assistant=prose_script("assistant", *ASSISTANT_WORDS),
    )


# -- the fake server, in this process or a child


class Server(Protocol):
    base_url: str

    def stats(self) -> dict[str, int]: ...

    def requests(self, start: int) -> list[dict[str, Any]]: ...

    def timeline(self, start: int) -> list[tuple[float, float]]: ...


class LocalServer:
    def __init__(self, server: FakeOpenAIServer) -> None:
        self.server = server
        self.base_url = server.base_url

    def stats(self) -> dict[str, int]:
        return self.server.stats

    def requests(self, start: int) -> list[dict[str, Any]]:
        return self.server.requests[start:]

    def timeline(self, start: int) -> list[tuple[float, float]]:
        return timeline(self.server, start)


def timeline(server: FakeOpenAIServer, start: int) -> list[tuple[float, float]]:
    """When each request from the ``start``-th on arrived and when its answer was sent whole
    (``time.monotonic``)."""
    return [(r.received_at, r.answered_at or r.received_at) for r in server.records[start:]]


def _serve(conn: Connection, latency: float) -> None:
    with FakeOpenAIServer(realistic_responder(), latency=latency) as server:
        conn.send(server.base_url)
        while (command := conn.recv()) != "stop":
            name, argument = command
            if name == "stats":
                conn.send(server.stats)
            elif name == "timeline":
                conn.send(timeline(server, argument))
            else:
                conn.send(server.requests[argument:])


class ChildServer:
    """A FakeOpenAIServer in a forked child, asked for stats and requests over a pipe."""

    def __init__(self, latency: float) -> None:
        self.conn, child_conn = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("fork").Process(
            target=_serve, args=(child_conn, latency), daemon=True
        )
        self.process.start()
        self.base_url: str = self.conn.recv()

    def stats(self) -> dict[str, int]:
        self.conn.send(("stats", 0))
        return self.conn.recv()

    def requests(self, start: int) -> list[dict[str, Any]]:
        self.conn.send(("requests", start))
        return self.conn.recv()

    def timeline(self, start: int) -> list[tuple[float, float]]:
        self.conn.send(("timeline", start))
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send("stop")
        self.process.join(10)


@dataclass
class Servers:
    """The servers of parts 1 and 2, started before any event loop or thread exists (fork)."""

    delayed: Server
    instant: Server
    stoppers: list[Callable[[], None]]

    @classmethod
    def start(cls, in_process: bool) -> Servers:
        stoppers: list[Callable[[], None]] = []

        def one(latency: float) -> Server:
            if in_process:
                fake = FakeOpenAIServer(realistic_responder(), latency=latency).start()
                stoppers.append(fake.stop)
                return LocalServer(fake)
            child = ChildServer(latency)
            stoppers.append(child.stop)
            return child

        return cls(delayed=one(LATENCY), instant=one(0.0), stoppers=stoppers)

    def stop(self) -> None:
        for stop in self.stoppers:
            stop()


# -- running conversations


def conversation_context(base_url: str, rounds: int, **overrides: Any) -> ConversationContext:
    return ConversationContext(
        base_url=base_url,
        api_key="bench",
        model="fake-model",
        min_rounds=rounds,
        max_rounds=rounds,
        **overrides,
    )


async def generate(
    base_url: str, conversations: int, rounds: int, concurrency: int, **overrides: Any
) -> RunSummary:
    """One ``run_conversations`` run; fails loudly on a short or failed run."""
    with tempfile.TemporaryDirectory() as folder:
        plan = RunPlan(
            count=conversations,
            conversation_dir=Path(folder),
            distilled_dir=Path(folder),
            scenarios=builtin_scenarios(),
            seed=7,
            concurrency=concurrency,
            distill=False,
        )
        ctx = conversation_context(base_url, rounds, **overrides)
        summary = await run_conversations(plan, ctx, Reporter())
    if summary.failures or summary.rounds != conversations * rounds:
        raise RuntimeError(f"bad run: {summary.failures or summary.closing_line()}")
    return summary


async def bare_calls(
    client: openai.AsyncOpenAI, bodies: Sequence[dict[str, Any]], workers: int, stream: bool
) -> None:
    """Send ``bodies`` again with the bare client, as ``workers`` sequential chains at once."""

    async def call(body: dict[str, Any]) -> None:
        options = {"model": body["model"], "messages": body["messages"]}
        options |= {"temperature": body.get("temperature"), "max_tokens": body.get("max_tokens")}
        if not stream:
            await client.chat.completions.create(**options)
            return
        chunks = await client.chat.completions.create(
            **options, stream=True, stream_options={"include_usage": True}
        )
        async for _chunk in chunks:
            pass

    async def chain(part: Sequence[dict[str, Any]]) -> None:
        for body in part:
            await call(body)

    await asyncio.gather(*(chain(bodies[i::workers]) for i in range(workers)))


@dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float  # this process's CPU seconds: near ``wall`` means the client is CPU-bound


async def timed(job: Awaitable[object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    await job
    return Timing(time.perf_counter() - wall, time.process_time() - cpu)


def streamed(bodies: Sequence[dict[str, Any]]) -> int:
    return sum(bool(body.get("stream")) for body in bodies)


# -- the three parts


@dataclass
class Row:
    figure: str
    value: str
    baseline: str
    ratio: float | None
    goal: str = "info"
    passed: bool | None = None


async def latency_part(servers: Servers) -> list[Row]:
    server = servers.delayed
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="bench")
    await generate(server.base_url, 2, 2, 2)  # warm-up: imports, clients, connections
    runs: list[Timing] = []
    replays: list[Timing] = []
    for _ in range(LATENCY_REPEATS):
        start = server.stats()["calls"]
        shape = (LATENCY_CONVERSATIONS, LATENCY_ROUNDS, LATENCY_CONVERSATIONS)
        runs.append(await timed(generate(server.base_url, *shape)))
        bodies = server.requests(start)
        replays.append(await timed(bare_calls(client, bodies, LATENCY_CONVERSATIONS, False)))
    await client.close()
    best = min(runs, key=lambda t: t.wall)
    replay = min(replays, key=lambda t: t.wall)
    walls = ", ".join(f"{t.wall:.2f}" for t in runs)
    shape_text = (
        f"{LATENCY_CONVERSATIONS}x{LATENCY_ROUNDS} @{LATENCY_CONVERSATIONS}, "
        f"{len(bodies)} calls, {streamed(bodies)} streamed"
    )
    ratio = best.wall / IDEAL_SECONDS
    return [
        Row(
            f"1. wall / ideal ({shape_text}; runs {walls} s)",
            f"{best.wall:.2f} s",
            f"{IDEAL_SECONDS:.2f} s",
            ratio,
            f"<= {LATENCY_GOAL}",
            ratio <= LATENCY_GOAL,
        ),
        Row(
            "   wall / real chain (15 sequential calls)",
            f"{best.wall:.2f} s",
            f"{CHAIN_SECONDS:.2f} s",
            best.wall / CHAIN_SECONDS,
        ),
        Row(
            "   client CPU / wall in that run (1.0 = CPU-bound)",
            f"{best.cpu:.2f} s",
            f"{best.wall:.2f} s",
            best.cpu / best.wall,
        ),
        Row(
            "   bare SDK replay of the same requests / ideal (the floor)",
            f"{replay.wall:.2f} s",
            f"{IDEAL_SECONDS:.2f} s",
            replay.wall / IDEAL_SECONDS,
        ),
    ]


async def overhead_part(servers: Servers) -> list[Row]:
    server = servers.instant
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="bench")
    await generate(server.base_url, 2, 2, 2)
    shape = (OVERHEAD_CONVERSATIONS, OVERHEAD_ROUNDS, OVERHEAD_CONVERSATIONS)
    pipeline: list[float] = []
    bare: list[float] = []
    bare_stream: list[float] = []
    for _ in range(OVERHEAD_REPEATS):
        start = server.stats()["calls"]
        run = await timed(generate(server.base_url, *shape))
        bodies = server.requests(start)
        calls = len(bodies)
        pipeline.append(run.wall / calls)
        bare.append((await timed(bare_calls(client, bodies, shape[0], False))).wall / calls)
        bare_stream.append((await timed(bare_calls(client, bodies, shape[0], True))).wall / calls)
    await client.close()
    best, base, base_stream = min(pipeline), min(bare), min(bare_stream)
    shape_text = f"{shape[0]}x{shape[1]} @{shape[2]}, {calls} calls, {streamed(bodies)} streamed"
    runs = "/".join(f"{1000 * v:.1f}" for v in pipeline)
    return [
        Row(
            f"2. per-call ms, pipeline vs bare ({shape_text}; runs {runs})",
            f"{1000 * best:.2f} ms",
            f"{1000 * base:.2f} ms",
            best / base,
            f"<= {OVERHEAD_GOAL}",
            best / base <= OVERHEAD_GOAL,
        ),
        Row(
            "   pipeline vs bare streaming loop",
            f"{1000 * best:.2f} ms",
            f"{1000 * base_stream:.2f} ms",
            best / base_stream,
        ),
    ]


def _history(body: dict[str, Any]) -> list[dict[str, Any]]:
    history = [m for m in body["messages"] if m["role"] != "system"]
    if history and message_text(history[0]) == load_prompt("user_kickoff"):
        history = history[1:]
    return history


def cut_loss(bodies: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """History cuts (per role) and the prompt tokens the calls right after them found uncached.

    Replays the requests in arrival order through a fresh prefix cache. A cut call is one whose
    history, past the opening, starts at a message that its role's history never started at.
    """
    cache = PrefixCache()
    starts: set[tuple[str, str]] = set()
    cuts = lost = 0
    for body in bodies:
        tokens = prompt_tokens(body["messages"])
        missed = len(tokens) - cache.match_and_store(tokens)
        history = _history(body)
        start = (message_text(body["messages"][0]), message_text(history[0]))
        if start not in starts and len(history) > 2:
            cuts, lost = cuts + 1, lost + missed
        starts.add(start)
    return cuts, lost


async def cache_part(_servers: Servers) -> list[Row]:
    rows = []
    for budget in CACHE_BUDGETS:
        with FakeOpenAIServer(realistic_responder()) as server:
            summary = await generate(
                server.base_url,
                CACHE_CONVERSATIONS,
                CACHE_ROUNDS,
                CACHE_CONVERSATIONS,
                history_budget_tokens=budget,
            )
            stats, bodies = server.stats, server.requests
        prompt = stats["prompt_tokens"]
        ratio = stats["cached_tokens"] / prompt
        cuts, lost = cut_loss(bodies)
        usage = summary.ledger.total().usage
        client_ratio = usage["cached_tokens"] / max(1, usage["input_tokens"])
        is_default = budget == ConversationContext.history_budget_tokens
        shape = f"{CACHE_CONVERSATIONS}x{CACHE_ROUNDS}, {stats['calls']} calls"
        rows += [
            Row(
                f"3. cached/prompt, budget {budget}{' (default)' if is_default else ''} "
                f"({shape}; client saw {client_ratio:.3f})",
                f"{stats['cached_tokens']:,}",
                f"{prompt:,}",
                ratio,
                f">= {CACHE_GOAL}" if is_default else "info",
                ratio >= CACHE_GOAL if is_default else None,
            ),
            Row(
                f"   uncached right after {cuts} history cuts",
                f"{lost:,}",
                f"{prompt:,}",
                lost / prompt,
            ),
        ]
    return rows


PARTS: dict[str, Callable[[Servers], Awaitable[list[Row]]]] = {
    "latency": latency_part,
    "overhead": overhead_part,
    "cache": cache_part,
}


def print_table(rows: Sequence[Row]) -> None:
    width = max(len(r.figure) for r in rows)
    print(f"{'figure':<{width}}  {'value':>12}  {'baseline':>12}  {'ratio':>6}  goal     result")
    for r in rows:
        ratio = f"{r.ratio:.3f}" if r.ratio is not None else ""
        result = "" if r.passed is None else ("PASS" if r.passed else "FAIL")
        print(
            f"{r.figure:<{width}}  {r.value:>12}  {r.baseline:>12}  {ratio:>6}  "
            f"{r.goal:<7}  {result}"
        )


async def run_parts(names: Sequence[str], servers: Servers) -> list[Row]:
    rows: list[Row] = []
    for name in names:
        rows.extend(await PARTS[name](servers))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in-process-server", action="store_true")
    parser.add_argument("--profile", choices=sorted(PARTS), help="cProfile one part")
    args = parser.parse_args()
    tune_gc_for_runs()  # as `run` does (the baselines run in the same process)
    started = time.perf_counter()
    servers = Servers.start(args.in_process_server)
    try:
        if args.profile:
            profiler = cProfile.Profile()
            rows = profiler.runcall(asyncio.run, run_parts([args.profile], servers))
            stats = pstats.Stats(profiler).strip_dirs()
            stats.sort_stats("tottime").print_stats(30)
            stats.sort_stats("cumulative").print_stats(40)
        else:
            rows = asyncio.run(run_parts(list(PARTS), servers))
    finally:
        servers.stop()
    print_table(rows)
    where = "in this process" if args.in_process_server else "in a child process"
    print(f"(fake server for parts 1-2 {where}; total {time.perf_counter() - started:.1f} s)")
    return 0 if all(r.passed is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
