"""Benchmark: what a checkpoint costs per step, early in a conversation and late in it.

    python bench/bench_checkpoints.py [--rounds 100] [--chars 600]

A two-node graph (user, assistant) appends one message of ``--chars`` characters per step to
a message list, as the conversation graph does, for ``--rounds`` rounds, checkpointed on a
SQLite file in WAL mode with automatic WAL checkpoints off, so the WAL's growth per step is
the bytes the step wrote. Three designs:

- ``plain``: stock ``AsyncSqliteSaver``, list under ``add_messages`` (every checkpoint holds
  the whole list: the baseline, quadratic in the rounds);
- ``delta``: stock ``AsyncSqliteSaver``, list under a ``DeltaChannel`` folding
  ``add_messages`` (what the conversation state uses; checkpoints hold only the new writes);
- ``custom``: the previous release's saver (each message stored once per thread by digest,
  only the latest checkpoint kept), read from git at ``PREVIOUS`` (the commit before the
  saver went).

Printed per design: bytes written and time per step over rounds 5-25 and 80-100, and their
ratio (goal: <= 1.5, i.e. flat per-step cost), and against ``plain`` in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Annotated, Any

import aiosqlite
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from graph_distill.conversation.state import fold_messages

PREVIOUS = "fcd3a72"


class PlainState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], add_messages]
    rounds: int


class DeltaState(TypedDict, total=False):
    messages: Annotated[list[AnyMessage], fold_messages]
    rounds: int


def _graph(state: type, target: int, chars: int) -> StateGraph:
    text = ("lorem ipsum dolor sit amet " * (chars // 27 + 1))[:chars]

    def user(values: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [HumanMessage(f"{values.get('rounds', 0)} {text}")]}

    def assistant(values: dict[str, Any]) -> dict[str, Any]:
        rounds = values.get("rounds", 0) + 1
        return {"messages": [AIMessage(f"{rounds} {text}")], "rounds": rounds}

    builder = StateGraph(state)
    builder.add_node("user", user)
    builder.add_node("assistant", assistant)
    builder.add_edge(START, "user")
    builder.add_edge("user", "assistant")
    builder.add_conditional_edges(
        "assistant", lambda values: END if values["rounds"] >= target else "user"
    )
    return builder


async def _pragmas(connection: Any) -> None:
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "wal_autocheckpoint=0"):
        await connection.execute(f"PRAGMA {pragma}")


async def _stock_saver(path: Path) -> tuple[Any, Any]:
    connection = await aiosqlite.connect(path)
    await _pragmas(connection)
    saver = AsyncSqliteSaver(connection)
    await saver.setup()
    return saver, connection.close


async def _custom_saver(path: Path) -> tuple[Any, Any] | None:
    try:
        source = subprocess.run(
            ["git", "show", f"{PREVIOUS}:graph_distill/run/store.py"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    previous = sys.modules["previous_store"] = types.ModuleType("previous_store")
    exec(compile(source, "previous_store.py", "exec"), previous.__dict__)
    RunCheckpointSaver = previous.RunCheckpointSaver
    connection = sqlite3.connect(path, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA wal_autocheckpoint=0")
    saver = RunCheckpointSaver(connection)
    saver.setup()

    async def close() -> None:
        connection.close()

    return saver, close


async def _measure(design: str, rounds: int, chars: int, folder: Path) -> dict[str, list[float]]:
    path = folder / f"{design}.sqlite"
    opened = await (_custom_saver(path) if design == "custom" else _stock_saver(path))
    if opened is None:
        return {}
    saver, close = opened
    state = DeltaState if design == "delta" else PlainState
    graph = _graph(state, rounds, chars).compile(checkpointer=saver)
    wal = Path(f"{path}-wal")
    per_round: dict[str, list[float]] = {"bytes": [], "seconds": []}
    config = {"configurable": {"thread_id": "t"}, "recursion_limit": 10 * rounds}
    size, started = wal.stat().st_size if wal.exists() else 0, time.perf_counter()
    try:
        async for chunk in graph.astream(
            {"rounds": 0}, config, stream_mode="updates", durability="sync"
        ):
            if "assistant" not in chunk:
                continue
            now, grown = time.perf_counter(), wal.stat().st_size
            per_round["bytes"].append((grown - size) / 2)  # two steps a round
            per_round["seconds"].append((now - started) / 2)
            size, started = grown, now
    finally:
        await close()
    return per_round


def _window(values: list[float], first: int, last: int) -> float:
    return statistics.mean(values[first - 1 : last])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=110)
    parser.add_argument("--chars", type=int, default=600)
    args = parser.parse_args()
    print(f"{args.rounds} rounds, 2 steps a round, {args.chars} characters a message")
    print(
        f"{'design':8} {'B/step 5-25':>12} {'B/step 80-100':>14} {'ratio':>6} "
        f"{'ms/step 5-25':>13} {'ms/step 80-100':>15} {'ratio':>6}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for design in ("plain", "delta", "custom"):
            figures = await _measure(design, args.rounds, args.chars, Path(folder))
            if not figures:
                print(f"{design:8} (no git checkout with {PREVIOUS})")
                continue
            early_b, late_b = (_window(figures["bytes"], *w) for w in ((5, 25), (80, 100)))
            early_t, late_t = (_window(figures["seconds"], *w) for w in ((5, 25), (80, 100)))
            print(
                f"{design:8} {early_b:12.0f} {late_b:14.0f} {late_b / early_b:6.2f} "
                f"{early_t * 1e3:13.2f} {late_t * 1e3:15.2f} {late_t / early_t:6.2f}"
            )


if __name__ == "__main__":
    asyncio.run(main())
