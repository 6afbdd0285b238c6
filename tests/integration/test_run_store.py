"""The run's checkpointer, on both paths: every step checkpointed, what is read back is exactly
the state (against LangGraph's own in-memory saver), a checkpoint holds only its step's new
messages, history is kept; a saver without what ours needs falls back to stock in one line; a
run checkpointed by the previous release's saver is refused in one line."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from graph_distill.context import ConversationContext
from graph_distill.conversation.graph import conversation_builder
from graph_distill.run import checkpoints
from graph_distill.run import manifest as manifest_module
from graph_distill.run.checkpoints import missing_internals, open_checkpointer
from graph_distill.run.manifest import (
    PREVIOUS_ITEMS_TABLE,
    ResumeError,
    db_path,
    open_manifest,
)
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.roles import RoleResponder

ROUNDS = 12
THREAD = "conversation-1"


async def converse(checkpointer: Any, *, before_end: bool = False) -> dict[str, Any]:
    """A 12-round conversation (every user message noised) checkpointed by ``checkpointer``;
    its final state (or, ``before_end``, its state before the end guard builds the record)
    as the checkpointer reads it back."""
    stop = ["end_guard"] if before_end else None
    graph = conversation_builder.compile(
        checkpointer=checkpointer, interrupt_before=stop, name="conversation"
    )
    config: Any = {"configurable": {"thread_id": THREAD}, "recursion_limit": 500}
    with FakeOpenAIServer(RoleResponder()) as server:
        ctx = ConversationContext(
            base_url=server.base_url,
            api_key="k",
            model="m",
            min_rounds=ROUNDS,
            max_rounds=ROUNDS,
            typo_rate=1.0,
        )
        inputs = {"seed": 3, "target_rounds": ROUNDS, "conversation_id": THREAD}
        await graph.ainvoke(inputs, config, context=ctx)
    values = (await graph.aget_state(config)).values
    if not before_end:
        del values["conversation_record"]["created_at"]  # the clock's
    return values


def rows(folder: Path, sql: str) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(db_path(folder))
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


@pytest.mark.parametrize("stock", [False, True])
async def test_state_read_back_is_the_state_and_no_checkpoint_holds_the_history(
    tmp_path: Path, stock: bool
) -> None:
    async with open_manifest(tmp_path), open_checkpointer(db_path(tmp_path), stock=stock) as saver:
        ours = await converse(saver, before_end=True)
    assert ours == await converse(InMemorySaver(), before_end=True)
    messages = ours["conversation_messages"]
    assert len(messages) == 2 * ROUNDS
    blobs = rows(tmp_path, "SELECT checkpoint FROM checkpoints")
    # Every step's checkpoint is kept, and none holds the first message (only its step's write).
    assert len(blobs) > 2 * ROUNDS
    first = messages[0].text.encode()
    assert not any(first in blob for (blob,) in blobs)
    (written,) = rows(
        tmp_path, "SELECT COUNT(*) FROM writes WHERE channel = 'conversation_messages'"
    )
    assert written[0] >= len(messages)


@pytest.mark.parametrize("stock", [False, True])
async def test_a_whole_conversation_is_read_back_by_a_fresh_process(
    tmp_path: Path, stock: bool
) -> None:
    async with open_manifest(tmp_path), open_checkpointer(db_path(tmp_path), stock=stock) as saver:
        ours = await converse(saver)
    assert ours == await converse(InMemorySaver())
    async with open_checkpointer(db_path(tmp_path), stock=stock) as saver:
        graph = conversation_builder.compile(checkpointer=saver)
        config: Any = {"configurable": {"thread_id": THREAD}}
        state = await graph.aget_state(config)
        history = [snapshot async for snapshot in graph.aget_state_history(config)]
    del state.values["conversation_record"]["created_at"]
    assert state.values == ours
    assert len(history) > 2 * ROUNDS  # time travel: every step can be gone back to


class WithoutDeltaHistory(AsyncSqliteSaver):
    aget_delta_channel_history = BaseCheckpointSaver.aget_delta_channel_history


async def test_a_saver_without_what_ours_needs_falls_back_to_stock_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert missing_internals(AsyncSqliteSaver) is None
    assert missing_internals(WithoutDeltaHistory) == "AsyncSqliteSaver.aget_delta_channel_history"
    monkeypatch.setattr(checkpoints, "AsyncSqliteSaver", WithoutDeltaHistory)
    async with open_checkpointer(tmp_path / "runs.sqlite", stock=False) as saver:
        assert isinstance(saver, checkpoints.WholeWritesSaver)
        # The stock saver opens its own connection: not in WAL mode as ours is.
        async with saver.conn.execute("PRAGMA journal_mode") as cursor:
            assert (await cursor.fetchone()) != ("wal",)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("graph-distill: langgraph-checkpoint-sqlite 3.")
    assert lines[0].endswith("using its stock checkpointer")


async def test_a_run_of_the_previous_release_is_refused_in_one_line(tmp_path: Path) -> None:
    async with open_manifest(tmp_path) as manifest:
        run = await manifest.create({"count": 1}, 1)
        await manifest.connection.execute(
            f"CREATE TABLE {PREVIOUS_ITEMS_TABLE} (thread_id TEXT, digest BLOB, type TEXT, "
            "item BLOB)"
        )
        # Items of another run's thread do not stand in the way; those of this run's do.
        await manifest.connection.execute(
            f"INSERT INTO {PREVIOUS_ITEMS_TABLE} VALUES ('other', x'00', 'msgpack', x'00')"
        )
        await manifest.connection.commit()
        assert (await manifest.get(run.run_id)).run_id == run.run_id
        [item] = await manifest.items(run.run_id)
        await manifest.connection.execute(
            f"INSERT INTO {PREVIOUS_ITEMS_TABLE} VALUES (?, x'00', 'msgpack', x'00')",
            (item.distill_thread,),
        )
        await manifest.connection.commit()
        with pytest.raises(ResumeError) as raised:
            await manifest.get(run.run_id)
    assert "\n" not in str(raised.value)
    assert "start a new run" in str(raised.value)


@pytest.mark.parametrize("stock", [False, True])
async def test_a_cancelled_checkpoint_write_leaves_the_database_free(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stock: bool
) -> None:
    # A run stopping cancels its conversations, some in the middle of a checkpoint write: the
    # write's INSERT runs in the connection's thread anyway, and without its commit the
    # manifest (another connection on the same file) would wait out the busy timeout and
    # fail with "database is locked".
    monkeypatch.setattr(manifest_module, "BUSY_TIMEOUT_SECONDS", 1.0)
    checkpoint = empty_checkpoint()
    async with (
        open_manifest(tmp_path) as manifest,
        open_checkpointer(db_path(tmp_path), stock=stock) as saver,
    ):
        await manifest.create({}, 1, "run-1")
        config: Any = {"configurable": {"thread_id": THREAD, "checkpoint_ns": ""}}
        write = asyncio.ensure_future(saver.aput(config, checkpoint, {}, {}))
        await asyncio.sleep(0)
        write.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await write
        await manifest.mark_complete("run-1")
    assert rows(tmp_path, "SELECT count(*) FROM checkpoints") == [(1,)]
