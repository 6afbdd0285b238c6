"""The run's checkpointer: every step checkpointed, each message and round print stored once,
and what is read back is exactly the state (against LangGraph's own in-memory saver)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

from graph_distill.context import ConversationContext
from graph_distill.conversation.graph import conversation_builder
from graph_distill.run.store import DB_NAME, STORED_ONCE, open_store
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
    connection = sqlite3.connect(folder / DB_NAME)
    try:
        return connection.execute(sql).fetchall()
    finally:
        connection.close()


async def test_state_read_back_is_the_state_and_each_item_is_stored_once(tmp_path: Path) -> None:
    async with open_store(tmp_path) as (saver, _):
        ours = await converse(saver, before_end=True)
    assert ours == await converse(InMemorySaver(), before_end=True)
    messages, noise = ours["conversation_messages"], ours["noise"]
    assert len(messages) == 2 * ROUNDS and len(noise) == ROUNDS
    # Each message once (the clean text of a noised one is in ``noise``), a print per round.
    (items,) = rows(tmp_path, "SELECT COUNT(*) FROM graph_distill_items")[0]
    assert items == len(messages) + ROUNDS
    (blob,) = rows(tmp_path, "SELECT checkpoint FROM checkpoints")[0]
    for message in messages:
        assert message.text.encode() not in blob


async def test_a_whole_conversation_is_read_back_by_a_fresh_process(tmp_path: Path) -> None:
    async with open_store(tmp_path) as (saver, _):
        ours = await converse(saver)
    assert ours == await converse(InMemorySaver())
    async with open_store(tmp_path) as (saver, _):
        found = await saver.aget_tuple({"configurable": {"thread_id": THREAD}})
    assert found is not None
    values = found.checkpoint["channel_values"]
    for channel in STORED_ONCE:
        assert values[channel] == ours[channel]


async def test_checkpoints_written_whole_are_read_as_they_are(tmp_path: Path) -> None:
    """A database from before items were stored apart (LangGraph's own SQLite saver)."""
    async with open_store(tmp_path):
        pass
    messages = [HumanMessage("hello", id="m0"), AIMessage("hi there", id="m1")]
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {"conversation_messages": messages, "rounds": 1}
    config: Any = {"configurable": {"thread_id": "old", "checkpoint_ns": ""}}
    connection = sqlite3.connect(tmp_path / DB_NAME)
    SqliteSaver(connection).put(config, checkpoint, {}, {})
    connection.close()
    async with open_store(tmp_path) as (saver, _):
        found = await saver.aget_tuple({"configurable": {"thread_id": "old"}})
    assert found is not None
    assert found.checkpoint["channel_values"] == {"conversation_messages": messages, "rounds": 1}


async def test_deleting_a_thread_deletes_its_items(tmp_path: Path) -> None:
    async with open_store(tmp_path) as (saver, _):
        await converse(saver)
        await saver.adelete_thread(THREAD)
        assert await saver.aget_tuple({"configurable": {"thread_id": THREAD}}) is None
    assert rows(tmp_path, "SELECT COUNT(*) FROM graph_distill_items") == [(0,)]
