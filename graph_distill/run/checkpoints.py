"""The run's checkpointer: LangGraph's own ``AsyncSqliteSaver`` on the conversation directory's
database (thread id = conversation id), every checkpoint kept (history, time travel).

A checkpoint costs the same at round 100 as at round 1 because the message list is a
``DeltaChannel`` (conversation/state.py): a checkpoint holds the step's new messages, and the
saver rebuilds the list from them in one query. ``stock=False`` opens the saver on a connection
of ours (WAL, so a kill -9 leaves it consistent; a long busy wait, as two runs may share a
directory); ``stock=True`` uses the saver exactly as the package makes it."""

from __future__ import annotations

import inspect
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path

import aiosqlite
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from graph_distill.run.manifest import BUSY_TIMEOUT_SECONDS

WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
PRAGMAS = (
    "journal_mode=WAL",
    # In WAL mode NORMAL survives a killed process; only a power cut may lose the last steps.
    "synchronous=NORMAL",
    f"journal_size_limit={WAL_SIZE_LIMIT_BYTES}",
)


def missing_internals(saver: type[AsyncSqliteSaver]) -> str | None:
    """What of ``saver`` the connection of ours relies on is not there as expected, if anything:
    a constructor taking the connection, and the saver's own one-query delta history (the
    base class's walks the checkpoints one by one)."""
    if "conn" not in inspect.signature(saver.__init__).parameters:
        return "AsyncSqliteSaver(conn)"
    history = getattr(saver, "aget_delta_channel_history", None)
    if history is None or history is BaseCheckpointSaver.aget_delta_channel_history:
        return "AsyncSqliteSaver.aget_delta_channel_history"
    return None


@asynccontextmanager
async def open_checkpointer(path: Path, *, stock: bool = False) -> AsyncIterator[AsyncSqliteSaver]:
    """The checkpointer of the database at ``path``: the stock saver when ``stock`` or when the
    saver lacks what ours needs (said in one line on stderr)."""
    missing = None if stock else missing_internals(AsyncSqliteSaver)
    if missing is not None:
        print(
            f"graph-distill: langgraph-checkpoint-sqlite {version('langgraph-checkpoint-sqlite')}"
            f" has no {missing} as expected; using its stock checkpointer",
            file=sys.stderr,
        )
    if stock or missing is not None:
        async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
            yield saver
        return
    async with aiosqlite.connect(path, timeout=BUSY_TIMEOUT_SECONDS) as connection:
        for pragma in PRAGMAS:
            await connection.execute(f"PRAGMA {pragma}")
        saver = AsyncSqliteSaver(connection)
        await saver.setup()
        yield saver
