"""The pipeline graph: a generated conversation flows straight into distillation."""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from typing_extensions import TypedDict

from graph_distill.context import PipelineContext
from graph_distill.conversation.graph import conversation_graph
from graph_distill.conversation.state import ConversationInput
from graph_distill.distill.graph import distill_graph
from graph_distill.files.writing import ConversationRecord
from graph_distill.llm.usage import Usage


class PipelineOutput(TypedDict):
    conversation_record: ConversationRecord
    distilled_chunks: list[dict[str, Any]]
    final_summary: str
    final_notes: dict[str, Any]
    distill_usage: Usage


class PipelineState(ConversationInput, total=False):
    conversation: list[dict[str, str]]
    conversation_record: ConversationRecord
    distilled_chunks: list[dict[str, Any]]
    final_summary: str
    final_notes: dict[str, Any]
    distill_usage: Usage


# The subgraphs share the key ``conversation``: the first writes it, the second reads it.
pipeline_builder = StateGraph(
    PipelineState,
    context_schema=PipelineContext,
    input_schema=ConversationInput,
    output_schema=PipelineOutput,
)
pipeline_builder.add_node("generate", conversation_graph)
pipeline_builder.add_node("distill", distill_graph)
pipeline_builder.add_edge(START, "generate")
pipeline_builder.add_edge("generate", "distill")
pipeline_builder.add_edge("distill", END)

pipeline_graph = pipeline_builder.compile(name="pipeline")
