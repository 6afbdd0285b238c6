"""Durable runs: one SQLite database per conversation directory holds the graphs' checkpoints
(thread id = conversation id) and the run manifest (each run's settings, and per conversation
its id and how far it got), so a crashed or interrupted run can be resumed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import operator
import secrets
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any
from uuid import uuid4

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    SerializerProtocol,
    get_checkpoint_metadata,
)
from langgraph.checkpoint.sqlite import SqliteSaver

DB_NAME = ".graph-distill-runs.sqlite"
# How long a write waits for another process's (two runs may share a directory).
BUSY_TIMEOUT_SECONDS = 60.0
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
# Channels whose list items never change once in a graph's state: each is stored once.
STORED_ONCE = ("conversation_messages", "round_prints")
# How a checkpoint refers to a stored item (a key no state item has).
ITEM_REF = "__graph_distill_item__"
# Threads whose stored items are remembered (more than a run works on at once).
MAX_REMEMBERED_THREADS = 1024

_ITEMS_SCHEMA = """
CREATE TABLE IF NOT EXISTS graph_distill_items (
    thread_id TEXT NOT NULL,
    digest BLOB NOT NULL,
    type TEXT NOT NULL,
    item BLOB NOT NULL,
    PRIMARY KEY (thread_id, digest)
) WITHOUT ROWID
"""


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
    """The runs recorded beside the checkpoints, kept through the checkpointer's connection (a
    second connection could wait on a transaction of the first that it blocks). Its methods are
    coroutines for their callers, and do their few statements at once."""

    def __init__(self, saver: RunCheckpointSaver, path: Path) -> None:
        self.saver = saver
        self.path = path

    async def setup(self) -> None:
        with self.saver.transaction() as cursor:
            cursor.executescript(_SCHEMA)

    async def _write(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self.saver.transaction() as cursor:
            cursor.executemany(sql, rows)

    async def _read(self, sql: str, parameters: tuple[Any, ...]) -> list[Any]:
        with self.saver.transaction() as cursor:
            return list(cursor.execute(sql, parameters).fetchall())

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
        with self.saver.transaction() as cursor:
            cursor.execute(
                "INSERT INTO graph_distill_runs (run_id, created_at, settings) VALUES (?, ?, ?)",
                (run.run_id, run.created_at, json.dumps(run.settings)),
            )
            cursor.executemany(
                "INSERT INTO graph_distill_run_items (run_id, item_index, conversation_id, status)"
                " VALUES (?, ?, ?, ?)",
                items,
            )
        return run

    async def add_item(self, run_id: str) -> RunItem:
        """One more pending conversation for run ``run_id`` (a replacement)."""
        with self.saver.transaction() as cursor:
            (index,) = cursor.execute(
                "SELECT COALESCE(MAX(item_index), -1) + 1 FROM graph_distill_run_items "
                "WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            item = RunItem(index, uuid4().hex, ItemStatus.PENDING, None, None)
            cursor.execute(
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


class RunCheckpointSaver(SqliteSaver):
    """The checkpointer of runs that may be killed at any moment, whose checkpoints cost the
    same at round 100 as at round 1.

    It keeps only each thread's latest checkpoint and its writes: resuming needs nothing older.

    Every checkpoint holds the whole state, and LangGraph takes one after every step, so a
    conversation's messages would be written again at each step (the square of the rounds).
    The items of ``STORED_ONCE`` channels (messages, round fingerprints) never change once in
    the state (a node that edits a message writes a new one), so each is stored once per
    thread, by its digest, in ``graph_distill_items``, in the transaction of the first
    checkpoint that refers to it; checkpoints hold references, which reading resolves.

    Its coroutines do their statements at once, in the event loop's thread: each is a short
    transaction on a local file, cheaper than the two thread switches a call to a SQLite
    thread costs (a run takes several checkpoints per model call). So a finished task's writes
    are saved when LangGraph hands them over, not when it awaits the result behind its
    ``max_concurrency`` gate (that would wait until every queued task of the step had started:
    a kill in between would lose, say, most of the distilled chunks)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)
        # What is known to be stored, per thread; the oldest threads are forgotten first.
        self._stored: OrderedDict[str, _StoredItems] = OrderedDict()

    def setup(self) -> None:
        if self.is_setup:
            return
        super().setup()
        self.conn.executescript(_ITEMS_SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """A cursor whose statements are committed together, or not at all."""
        with self.lock:
            self.setup()
            cursor = self.conn.cursor()
            try:
                yield cursor
                self.conn.commit()
            except BaseException:
                self.conn.rollback()
                raise
            finally:
                cursor.close()

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        place = config["configurable"]
        thread_id, namespace = str(place["thread_id"]), place["checkpoint_ns"]
        stored = self._known(thread_id)
        values, rows, learned = stored.by_reference(checkpoint["channel_values"], self.serde)
        kind, blob = self.serde.dumps_typed({**checkpoint, "channel_values": values})
        meta = json.dumps(get_checkpoint_metadata(config, metadata), ensure_ascii=False)
        key = (thread_id, namespace, checkpoint["id"])
        older = "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id < ?"
        with self.transaction() as cursor:
            cursor.executemany(
                "INSERT OR IGNORE INTO graph_distill_items (thread_id, digest, type, item) "
                "VALUES (?, ?, ?, ?)",
                rows,
            )
            cursor.execute(
                "INSERT OR REPLACE INTO checkpoints (thread_id, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, type, checkpoint, metadata) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*key, place.get("checkpoint_id"), kind, blob, meta.encode("utf-8", "ignore")),
            )
            cursor.execute(f"DELETE FROM writes {older}", key)
            cursor.execute(f"DELETE FROM checkpoints {older}", key)
        stored.learn(learned)
        return {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": namespace,
                "checkpoint_id": checkpoint["id"],
            }
        }

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        found = super().get_tuple(config)
        return self._resolved(found) if found is not None else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        # Gathered first: the parent holds the connection's lock while it yields.
        listed = list(super().list(config, filter=filter, before=before, limit=limit))
        return (self._resolved(found) for found in listed)

    def delete_thread(self, thread_id: str) -> None:
        with self.transaction() as cursor:
            for table in ("checkpoints", "writes", "graph_distill_items"):
                cursor.execute(f"DELETE FROM {table} WHERE thread_id = ?", (str(thread_id),))
        self._stored.pop(str(thread_id), None)

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        for found in self.list(config, filter=filter, before=before, limit=limit):
            yield found

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    def aput_writes(  # type: ignore[override]
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            self.put_writes(config, writes, task_id, task_path)
        except Exception as error:
            # Raised where LangGraph awaits the result; when it does not (a task cancelled
            # after the run's store closed, on Ctrl-C), the error is not reported on exit.
            done.set_exception(error)
            done.add_done_callback(lambda future: future.exception())
        else:
            done.set_result(None)
        return done

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    def _known(self, thread_id: str) -> _StoredItems:
        stored = self._stored.get(thread_id)
        if stored is None:
            stored = self._stored[thread_id] = _StoredItems(thread_id)
            if len(self._stored) > MAX_REMEMBERED_THREADS:
                self._stored.popitem(last=False)
        self._stored.move_to_end(thread_id)
        return stored

    def _resolved(self, found: CheckpointTuple) -> CheckpointTuple:
        """``found`` with its references replaced by the stored items."""
        values = found.checkpoint["channel_values"]
        if not any(_has_refs(values.get(channel)) for channel in STORED_ONCE):
            return found
        thread_id = str(found.config["configurable"]["thread_id"])
        with self.transaction() as cursor:
            rows = cursor.execute(
                "SELECT digest, type, item FROM graph_distill_items WHERE thread_id = ?",
                (thread_id,),
            ).fetchall()
        items = {digest: self.serde.loads_typed((kind, blob)) for digest, kind, blob in rows}
        learned = _Learned()
        resolved = dict(values)
        for channel in STORED_ONCE:
            refs = values.get(channel)
            if _has_refs(refs):
                resolved[channel] = [_item(items, ref, thread_id) for ref in refs]
                learned.lists[channel] = (list(resolved[channel]), list(refs))
                learned.digests.update(
                    (id(item), (item, ref[ITEM_REF]))
                    for item, ref in zip(resolved[channel], refs, strict=True)
                )
        self._known(thread_id).learn(learned)
        return found._replace(checkpoint={**found.checkpoint, "channel_values": resolved})


@dataclass
class _Learned:
    """Items a checkpoint refers to: by ``id(item)``, ``(item, digest)`` (holding the item
    keeps its id from being reused); by channel, its items and their references."""

    digests: dict[int, tuple[Any, bytes]] = field(default_factory=dict)
    lists: dict[str, tuple[list[Any], list[dict[str, bytes]]]] = field(default_factory=dict)


class _StoredItems(_Learned):
    """What a saver knows it stored for one thread: each item, and the last checkpoint's
    lists (a list that grows keeps its head, whose references need no new look)."""

    def __init__(self, thread_id: str) -> None:
        super().__init__()
        self.thread_id = thread_id

    def learn(self, learned: _Learned) -> None:
        """Take what a committed checkpoint stored."""
        self.digests.update(learned.digests)
        self.lists.update(learned.lists)

    def by_reference(
        self, values: dict[str, Any], serde: SerializerProtocol
    ) -> tuple[dict[str, Any], list[tuple[str, bytes, str, bytes]], _Learned]:
        """``values`` with the stored-once items as references, the rows of the items not
        stored yet, and what to learn once they are."""
        rows: list[tuple[str, bytes, str, bytes]] = []
        learned = _Learned()
        replaced = dict(values)
        for channel in STORED_ONCE:
            items = values.get(channel)
            if not isinstance(items, list):
                continue
            refs = self._kept_head(channel, items)
            for item in items[len(refs) :]:
                seen = self.digests.get(id(item)) or learned.digests.get(id(item))
                if seen is None or seen[0] is not item:
                    kind, blob = serde.dumps_typed(item)
                    digest = hashlib.blake2b(kind.encode() + b"\0" + blob, digest_size=16).digest()
                    rows.append((self.thread_id, digest, kind, blob))
                    seen = learned.digests[id(item)] = (item, digest)
                refs.append({ITEM_REF: seen[1]})
            replaced[channel] = refs
            learned.lists[channel] = (list(items), refs)
        return replaced, rows, learned

    def _kept_head(self, channel: str, items: list[Any]) -> list[dict[str, bytes]]:
        """The references of the last checkpoint's list of ``channel`` when ``items`` starts
        with the same objects (a copy of that list is kept: in-place edits show)."""
        last = self.lists.get(channel)
        if last is None or len(last[0]) > len(items):
            return []
        head, refs = last
        return list(refs) if all(map(operator.is_, head, items)) else []


def _has_refs(items: Any) -> bool:
    return isinstance(items, list) and any(
        isinstance(item, dict) and ITEM_REF in item for item in items
    )


def _item(items: dict[bytes, Any], ref: Any, thread_id: str) -> Any:
    if not (isinstance(ref, dict) and ITEM_REF in ref):
        return ref
    try:
        return items[ref[ITEM_REF]]
    except KeyError:
        raise ResumeError(
            f"the checkpoint of {thread_id} refers to a stored item that is missing"
        ) from None


@asynccontextmanager
async def open_store(
    conversation_dir: Path,
) -> AsyncIterator[tuple[RunCheckpointSaver, RunManifest]]:
    """The checkpointer and manifest of ``conversation_dir``'s database (WAL: consistent after
    a kill -9)."""
    path = db_path(conversation_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives a killed process; only a power cut may lose the last steps.
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
        saver = RunCheckpointSaver(connection)
        saver.setup()
        manifest = RunManifest(saver, path)
        await manifest.setup()
        yield saver, manifest
    finally:
        connection.close()
