"""Checkpoints pack each message once per run, in the bytes LangGraph's own serializer writes."""

from __future__ import annotations

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from graph_distill.run.checkpoint_serde import MessagePackingSerializer


def checkpoint(messages: list) -> dict:
    return {
        "v": 4,
        "id": "1f0",
        "channel_values": {"conversation_messages": messages, "rounds": 3, "noise": [{"turn": 0}]},
        "channel_versions": {"conversation_messages": "00002.0.1"},
    }


def test_the_bytes_are_those_of_the_stock_serializer_and_read_back() -> None:
    messages = [HumanMessage("hi there", id="m0"), AIMessage("hello! \u00e9\u4e2d", id="m1")]
    ours, stock = MessagePackingSerializer(), JsonPlusSerializer()
    for grown in range(3):
        messages = [*messages, HumanMessage(f"question {grown}", id=f"m{len(messages)}")]
        dumped = ours.dumps_typed(checkpoint(messages))
        assert dumped == stock.dumps_typed(checkpoint(messages))
        assert ours.loads_typed(dumped)["channel_values"]["conversation_messages"] == messages
    assert ours.dumps_typed(None) == stock.dumps_typed(None)
    assert ours.dumps_typed(b"raw") == stock.dumps_typed(b"raw")


def test_a_replaced_message_is_packed_anew() -> None:
    ours, stock = MessagePackingSerializer(max_messages=2), JsonPlusSerializer()
    first = [HumanMessage("teh typo", id="m0"), AIMessage("answer", id="m1")]
    ours.dumps_typed(checkpoint(first))
    edited = [HumanMessage("the typo", id="m0"), first[1], AIMessage("more", id="m2")]
    assert ours.dumps_typed(checkpoint(edited)) == stock.dumps_typed(checkpoint(edited))
    assert ours.dumps_typed(checkpoint(first)) == stock.dumps_typed(checkpoint(first))
