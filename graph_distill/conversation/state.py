"""What flows through the conversation graph: its input, output and state."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from functools import reduce
from typing import Annotated, Any

from langchain_core.messages import AnyMessage
from langgraph.channels.delta import DeltaChannel
from langgraph.graph.message import Messages, add_messages
from typing_extensions import TypedDict

from graph_distill.conversation.stagnation import RoundPrint, keep_recent
from graph_distill.files.writing import ChatMessage, ConversationRecord
from graph_distill.llm.usage import Usage, add_usage


def _add_all(messages: list[AnyMessage], updates: Sequence[Messages]) -> list[AnyMessage]:
    return reduce(add_messages, updates, messages)


# A checkpoint holds only the messages its step added (and a full copy every 100 updates),
# not the whole list: a step costs the same at round 100 as at round 1 on any checkpointer.
fold_messages = DeltaChannel(_add_all)


class ConversationInput(TypedDict, total=False):
    """All optional: a missing scenario is drawn from the built-ins with the seed."""

    scenario: dict[str, Any]
    scenario_key: str
    conversation_id: str
    seed: int
    target_rounds: int
    # The user persona's record (personas.py); a missing one is drawn with the seed.
    persona: dict[str, Any]


class ConversationOutput(TypedDict):
    conversation: list[ChatMessage]
    conversation_record: ConversationRecord


class ConversationState(ConversationInput, ConversationOutput, total=False):
    conversation_messages: Annotated[list[AnyMessage], fold_messages]
    rounds: int
    followups_used: int
    pending_topic: str | None
    # What stagnation detection remembers: a fingerprint per recent round (see stagnation.py),
    # the scenario's words, and how far the escalation of the current stall has gone.
    round_prints: Annotated[list[RoundPrint], keep_recent]
    topic_words: list[str]
    escalation: int
    escalated_at: int
    topic_switches: Annotated[list[dict[str, Any]], operator.add]
    role_breaks: Annotated[list[dict[str, Any]], operator.add]
    noise: Annotated[list[dict[str, Any]], operator.add]
    conversation_usage: Annotated[Usage, add_usage]
    termination_reason: str
    # The verdict on the last reply, decided once by ``respond``: the next node, and the stall
    # reason key (None: no stall). The edge after ``respond``, ``switch_topic`` and
    # ``end_guard`` read it.
    next_step: str
    stall_reason: str | None


class Progress(TypedDict, total=False):
    """A custom stream event (``stream_mode="custom"``): how far a conversation got.

    ``kind`` is ``started`` (with ``target_rounds``), ``user_message`` (``turn``, ``text``: the
    message as sent, noise included), ``round_done`` (``rounds``, ``target_rounds``),
    ``topic_switch`` (``turn``, ``reason``, ``to_topic``, ``escalation``: 1 for a switch, 2
    for one with repetition penalties and a firmer steer) or ``stalled`` (``rounds``,
    ``reason``: the conversation ends early because switching topics did not break the stall)."""

    kind: str
    target_rounds: int
    rounds: int
    turn: int
    text: str
    reason: str
    to_topic: str
    escalation: int
