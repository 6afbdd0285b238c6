"""The conversation graph: user simulator (with typos) -> assistant, then the stagnation detector
routes to the next user message, a topic switch, or the end guard."""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from graph_distill.context import ConversationContext
from graph_distill.conversation.nodes import (
    detect_stagnation,
    end_guard,
    respond,
    simulate_user,
    start,
    switch_topic,
)
from graph_distill.conversation.state import (
    ConversationInput,
    ConversationOutput,
    ConversationState,
)
from graph_distill.llm.models import LLM_RETRY

# Steps one round takes at most (user, assistant, switch; routing is an edge, not a step).
STEPS_PER_ROUND = 3
# start and end_guard, with room to spare.
EXTRA_STEPS = 10


def recursion_limit(max_rounds: int) -> int:
    """A recursion limit that never cuts a conversation short (rounds are counted in state)."""
    return max_rounds * STEPS_PER_ROUND + EXTRA_STEPS


conversation_builder = StateGraph(
    ConversationState,
    context_schema=ConversationContext,
    input_schema=ConversationInput,
    output_schema=ConversationOutput,
)
conversation_builder.add_node("start", start)
conversation_builder.add_node("simulate_user", simulate_user, retry_policy=LLM_RETRY)
conversation_builder.add_node("respond", respond, retry_policy=LLM_RETRY)
conversation_builder.add_node("switch_topic", switch_topic, retry_policy=LLM_RETRY)
conversation_builder.add_node("end_guard", end_guard)
conversation_builder.add_edge(START, "start")
conversation_builder.add_edge("start", "simulate_user")
conversation_builder.add_edge("simulate_user", "respond")
conversation_builder.add_conditional_edges(
    "respond", detect_stagnation, ["simulate_user", "switch_topic", "end_guard"]
)
conversation_builder.add_edge("switch_topic", "simulate_user")
conversation_builder.add_edge("end_guard", END)

conversation_graph = conversation_builder.compile(name="conversation")
