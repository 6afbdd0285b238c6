"""The run's checkpointer: LangGraph's own ``AsyncSqliteSaver`` on the conversation directory's
database (thread id = conversation id), every checkpoint kept (history, time travel).

A checkpoint costs the same at round 100 as at round 1 because the message list is a
``DeltaChannel`` (conversation/state.py): a checkpoint holds the step's new messages, and the
saver rebuilds the list from them in one query. ``stock=False`` opens the saver on a connection
of ours (WAL, so a kill -9 leaves it consistent; a long busy wait, as two runs may share a
directory); ``stock=True`` uses the saver as the package makes it. On both, a checkpoint write
cancelled half-way (a run stopping cancels its conversations) still commits: its INSERT has
already run in the connection's thread, and the transaction left open would lock the manifest
(another connection on the same file) out until the busy timeout."""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

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


T = TypeVar("T")


class WholeWritesSaver(AsyncSqliteSaver):
    """``AsyncSqliteSaver`` whose writes finish (commit included) even when their caller is
    cancelled; ``drain`` waits for the ones still going before the connection closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writing: set[asyncio.Future[Any]] = set()

    async def aput(self, *args: Any, **kwargs: Any) -> Any:
        return await self._whole(super().aput(*args, **kwargs))

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:
        await self._whole(super().aput_writes(*args, **kwargs))

    async def _whole(self, write: Awaitable[T]) -> T:
        task = asyncio.ensure_future(write)
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        return await asyncio.shield(task)

    async def drain(self) -> None:
        await asyncio.gather(*self._writing, return_exceptions=True)


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
async def open_checkpointer(path: Path, *, stock: bool = False) -> AsyncIterator[WholeWritesSaver]:
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
        async with WholeWritesSaver.from_conn_string(str(path)) as saver:
            try:
                yield saver
            finally:
                await saver.drain()
        return
    async with aiosqlite.connect(path, timeout=BUSY_TIMEOUT_SECONDS) as connection:
        for pragma in PRAGMAS:
            await connection.execute(f"PRAGMA {pragma}")
        saver = WholeWritesSaver(connection)
        await saver.setup()
        try:
            yield saver
        finally:
            await saver.drain()
