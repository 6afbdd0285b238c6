"""Durable runs: one SQLite database per conversation directory holds the graphs' checkpoints
(thread id = conversation id) and the run manifest (each run's settings, and per conversation
its id and how far it got), so a crashed or interrupted run can be resumed."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiosqlite
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from graph_distill.run.checkpoint_serde import MessagePackingSerializer

DB_NAME = ".graph-distill-runs.sqlite"
# How long a write waits for another process's (two runs may share a directory).
BUSY_TIMEOUT_SECONDS = 60.0
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024


_SCHEMA = """
CREATE TABLE IF NOT EXISTS graph_distill_runs (
    run_id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    settings TEXT NOT NULL,
    completed_at TEXT
);
CREATE TABLE IF NOT EXISTS graph_distill_run_items (
    run_id TEXT NOT NULL REFERENCES graph_distill_runs (run_id),
    item_index INTEGER NOT NULL,
    conversation_id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    conversation_path TEXT,
    distilled_path TEXT,
    PRIMARY KEY (run_id, item_index)
);
"""


_RUN_COLUMNS = "SELECT run_id, created_at, settings, completed_at FROM graph_distill_runs"


class ResumeError(Exception):
    """There is no run to resume, or it was started with other settings."""


class ItemStatus(StrEnum):
    PENDING = "pending"
    GENERATING = "generating"
    # A file name is recorded before the write, so a crash cannot leave an unknown duplicate.
    WRITING = "writing"
    SAVED = "saved"
    DISTILLED = "distilled"


@dataclass(frozen=True)
class RunItem:
    index: int
    conversation_id: str
    status: ItemStatus
    conversation_path: Path | None
    distilled_path: Path | None

    @property
    def distill_thread(self) -> str:
        return f"distill-{self.conversation_id}"


@dataclass(frozen=True)
class StoredRun:
    run_id: str
    created_at: str
    settings: dict[str, Any]
    complete: bool


def db_path(conversation_dir: Path) -> Path:
    return Path(conversation_dir) / DB_NAME


def new_run_id() -> str:
    return f"{datetime.now():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def latest_unfinished_run(conversation_dir: Path) -> StoredRun | None:
    """The latest run of ``conversation_dir`` not marked complete; reads only, creates nothing."""
    path = db_path(conversation_dir)
    if not path.exists():
        return None
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS)
    try:
        row = connection.execute(
            f"{_RUN_COLUMNS} WHERE completed_at IS NULL "
            "ORDER BY created_at DESC, rowid DESC LIMIT 1"
        ).fetchone()
    except sqlite3.OperationalError as error:
        if "no such table" in str(error):
            return None
        raise
    finally:
        connection.close()
    return _stored_run(row) if row else None


class RunManifest:
    """The runs recorded beside the checkpoints, kept through the checkpointer's connection and
    lock: with a second connection, a writer could wait on a transaction the event loop it
    blocks would have committed."""

    def __init__(self, saver: AsyncSqliteSaver, path: Path) -> None:
        self.saver = saver
        self.path = path

    async def setup(self) -> None:
        async with self.saver.lock:
            await self.saver.conn.executescript(_SCHEMA)
            await self.saver.conn.commit()

    async def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with self.saver.lock:
            await self.saver.conn.executemany(sql, rows)
            await self.saver.conn.commit()

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        async with self.saver.lock, self.saver.conn.execute(sql, parameters) as cursor:
            return list(await cursor.fetchall())

    async def get(self, run_id: str) -> StoredRun:
        rows = await self._read(f"{_RUN_COLUMNS} WHERE run_id = ?", (run_id,))
        if not rows:
            raise ResumeError(f"no run {run_id} in {self.path}")
        return _stored_run(rows[0])

    async def create(
        self, settings: Mapping[str, Any], count: int, run_id: str | None = None
    ) -> StoredRun:
        """A new run of ``count`` pending conversations, each with a fresh conversation id;
        ``run_id`` (from ``new_run_id``) lets the caller hold the run before it exists."""
        run = StoredRun(
            run_id=run_id or new_run_id(),
            created_at=datetime.now().isoformat(timespec="microseconds"),
            settings=dict(settings),
            complete=False,
        )
        items = [(run.run_id, index, uuid4().hex, ItemStatus.PENDING) for index in range(count)]
        async with self.saver.lock:
            await self.saver.conn.execute(
                "INSERT INTO graph_distill_runs (run_id, created_at, settings) VALUES (?, ?, ?)",
                (run.run_id, run.created_at, json.dumps(run.settings)),
            )
            await self.saver.conn.executemany(
                "INSERT INTO graph_distill_run_items (run_id, item_index, conversation_id, status)"
                " VALUES (?, ?, ?, ?)",
                items,
            )
            await self.saver.conn.commit()
        return run

    async def add_item(self, run_id: str) -> RunItem:
        """One more pending conversation for run ``run_id`` (a replacement)."""
        async with self.saver.lock:
            cursor = await self.saver.conn.execute(
                "SELECT COALESCE(MAX(item_index), -1) + 1 FROM graph_distill_run_items "
                "WHERE run_id = ?",
                (run_id,),
            )
            (index,) = await cursor.fetchone()  # type: ignore[misc]
            item = RunItem(index, uuid4().hex, ItemStatus.PENDING, None, None)
            await self.saver.conn.execute(
                "INSERT INTO graph_distill_run_items (run_id, item_index, conversation_id, status)"
                " VALUES (?, ?, ?, ?)",
                (run_id, item.index, item.conversation_id, item.status),
            )
            await self.saver.conn.commit()
        return item

    async def items(self, run_id: str) -> list[RunItem]:
        rows = await self._read(
            "SELECT item_index, conversation_id, status, conversation_path, distilled_path "
            "FROM graph_distill_run_items WHERE run_id = ? ORDER BY item_index",
            (run_id,),
        )
        return [
            RunItem(index, conversation_id, ItemStatus(status), _path(saved), _path(distilled))
            for index, conversation_id, status, saved, distilled in rows
        ]

    async def set_status(
        self,
        run_id: str,
        index: int,
        status: ItemStatus,
        *,
        conversation_path: Path | None = None,
        distilled_path: Path | None = None,
    ) -> None:
        """Record how far one conversation got; a path left out keeps its recorded value."""
        await self._write(
            "UPDATE graph_distill_run_items SET status = ?, "
            "conversation_path = COALESCE(?, conversation_path), "
            "distilled_path = COALESCE(?, distilled_path) "
            "WHERE run_id = ? AND item_index = ?",
            [(status, _text(conversation_path), _text(distilled_path), run_id, index)],
        )

    async def mark_complete(self, run_id: str) -> None:
        await self._write(
            "UPDATE graph_distill_runs SET completed_at = ? WHERE run_id = ?",
            [(datetime.now().isoformat(timespec="seconds"), run_id)],
        )


def _stored_run(row: tuple[str, str, str, str | None]) -> StoredRun:
    run_id, created_at, settings, completed_at = row
    return StoredRun(run_id, created_at, json.loads(settings), completed_at is not None)


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _text(path: Path | None) -> str | None:
    return str(Path(path).absolute()) if path is not None else None


class RunCheckpointSaver(AsyncSqliteSaver):
    """An AsyncSqliteSaver for runs that may be killed at any moment.

    It keeps only each thread's latest checkpoint and its writes: resuming needs nothing older,
    and every checkpoint holds the whole state (the conversation so far), so keeping them all
    would grow the database with the square of the rounds.

    It saves a finished task's writes at once: LangGraph passes them through the same
    ``max_concurrency`` gate as the tasks, so they would wait until every queued task of the
    step had started (a kill in between would lose, say, most of the distilled chunks).
    LangGraph calls this method when the task ends and awaits the result behind the gate."""

    def aput_writes(  # type: ignore[override]
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> asyncio.Task[None]:
        return asyncio.ensure_future(super().aput_writes(config, writes, task_id, task_path))

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        saved = await super().aput(config, checkpoint, metadata, new_versions)
        where = "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id < ?"
        place = saved["configurable"]
        key = (str(place["thread_id"]), place["checkpoint_ns"], place["checkpoint_id"])
        async with self.lock:
            await self.conn.execute(f"DELETE FROM writes {where}", key)
            await self.conn.execute(f"DELETE FROM checkpoints {where}", key)
            await self.conn.commit()
        return saved


@asynccontextmanager
async def open_store(
    conversation_dir: Path,
) -> AsyncIterator[tuple[RunCheckpointSaver, RunManifest]]:
    """The checkpointer and manifest of ``conversation_dir``'s database (WAL: consistent after
    a kill -9)."""
    path = db_path(conversation_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(path, timeout=BUSY_TIMEOUT_SECONDS) as connection:
        await connection.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives a killed process; only a power cut may lose the last steps.
        await connection.execute("PRAGMA synchronous=NORMAL")
        await connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        saver = RunCheckpointSaver(connection, serde=MessagePackingSerializer())
        await saver.setup()
        manifest = RunManifest(saver, path)
        await manifest.setup()
        yield saver, manifest
