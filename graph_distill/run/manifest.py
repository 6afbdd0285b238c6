"""The run manifest: each run's settings and, per conversation, its id and how far it got, in
our own tables of the conversation directory's database (beside the graphs' checkpoints, see
run/checkpoints.py), so a crashed or interrupted run can be resumed."""

from __future__ import annotations

import asyncio
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import uuid4

import aiosqlite

DB_NAME = ".graph-distill-runs.sqlite"
# How long a write waits for another connection's (two runs may share a directory).
BUSY_TIMEOUT_SECONDS = 60.0
# Where the previous release kept each message of a conversation's checkpoints.
PREVIOUS_ITEMS_TABLE = "graph_distill_items"

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
    """The runs recorded in the database at ``path``, through a connection of their own (whose
    statements run in aiosqlite's thread, off the event loop). Each method is one transaction."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self.connection = connection
        self.path = path
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, its statements committed together on exit, or not at all."""
        async with self._lock:
            try:
                yield self.connection
                await self.connection.commit()
            except BaseException:
                await self.connection.rollback()
                raise

    async def setup(self) -> None:
        async with self._transaction() as connection:
            await connection.executescript(_SCHEMA)

    async def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        async with self._transaction() as connection:
            await connection.executemany(sql, rows)

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        async with self._transaction() as connection:
            return list(await connection.execute_fetchall(sql, parameters))

    async def get(self, run_id: str) -> StoredRun:
        rows = await self._read(f"{_RUN_COLUMNS} WHERE run_id = ?", (run_id,))
        if not rows:
            raise ResumeError(f"no run {run_id} in {self.path}")
        previous = await self._read(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
            (PREVIOUS_ITEMS_TABLE,),
        )
        if previous and await self._read(
            f"SELECT 1 FROM {PREVIOUS_ITEMS_TABLE} WHERE thread_id IN (SELECT conversation_id "
            "FROM graph_distill_run_items WHERE run_id = ? UNION SELECT 'distill-' || "
            "conversation_id FROM graph_distill_run_items WHERE run_id = ?) LIMIT 1",
            (run_id, run_id),
        ):
            raise ResumeError(
                f"run {run_id} was checkpointed by graph-distill 0.1.0's own saver, which this "
                "release cannot read: finish it with 0.1.0, or start a new run (without --resume)"
            )
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
        async with self._transaction() as connection:
            await connection.execute(
                "INSERT INTO graph_distill_runs (run_id, created_at, settings) VALUES (?, ?, ?)",
                (run.run_id, run.created_at, json.dumps(run.settings)),
            )
            await connection.executemany(
                "INSERT INTO graph_distill_run_items (run_id, item_index, conversation_id, status)"
                " VALUES (?, ?, ?, ?)",
                items,
            )
        return run

    async def add_item(self, run_id: str) -> RunItem:
        """One more pending conversation for run ``run_id`` (a replacement)."""
        async with self._transaction() as connection:
            ((index,),) = await connection.execute_fetchall(
                "SELECT COALESCE(MAX(item_index), -1) + 1 FROM graph_distill_run_items "
                "WHERE run_id = ?",
                (run_id,),
            )
            item = RunItem(index, uuid4().hex, ItemStatus.PENDING, None, None)
            await connection.execute(
                "INSERT INTO graph_distill_run_items (run_id, item_index, conversation_id, status)"
                " VALUES (?, ?, ?, ?)",
                (run_id, item.index, item.conversation_id, item.status),
            )
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


@asynccontextmanager
async def open_manifest(conversation_dir: Path) -> AsyncIterator[RunManifest]:
    """The manifest of ``conversation_dir``'s database (WAL: consistent after a kill -9)."""
    path = db_path(conversation_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    async with aiosqlite.connect(path, timeout=BUSY_TIMEOUT_SECONDS) as connection:
        await connection.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives a killed process; only a power cut may lose the last steps.
        await connection.execute("PRAGMA synchronous=NORMAL")
        manifest = RunManifest(connection, path)
        await manifest.setup()
        yield manifest
