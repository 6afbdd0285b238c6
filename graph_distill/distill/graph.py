"""The distillation graph: split a conversation, map its chunks to notes in parallel (``Send``),
then reduce the notes, collapsing them in groups first while they exceed the notes budget.

    split -> distill_chunk (one task per chunk) -> plan_reduce -> reduce
                                    plan_reduce <-> collapse_group (one task per group)
    (one chunk: distill_chunk -> reduce; no chunk: split -> reduce)

Compiled without a checkpointer. A runner bounds its distillation calls with its resources'
``distill_limit``; an embedding caller may pass ``config={"max_concurrency": n}``.
"""

from __future__ import annotations

from langgraph.graph import END, START, StateGraph

from graph_distill.context import DistillContext
from graph_distill.distill.nodes import (
    collapse_group,
    distill_chunk,
    plan_reduce,
    reduce,
    route_chunks,
    route_notes,
    route_reduce,
    split,
)
from graph_distill.distill.state import DistillInput, DistillOutput, DistillState
from graph_distill.llm.models import LLM_RETRY

__all__ = ["DistillInput", "DistillOutput", "DistillState", "distill_builder", "distill_graph"]

distill_builder = StateGraph(
    DistillState,
    context_schema=DistillContext,
    input_schema=DistillInput,
    output_schema=DistillOutput,
)
distill_builder.add_node("split", split)
distill_builder.add_node("distill_chunk", distill_chunk, retry_policy=LLM_RETRY)
distill_builder.add_node("plan_reduce", plan_reduce)
distill_builder.add_node("collapse_group", collapse_group, retry_policy=LLM_RETRY)
distill_builder.add_node("reduce", reduce, retry_policy=LLM_RETRY)
distill_builder.add_edge(START, "split")
distill_builder.add_conditional_edges("split", route_chunks, ["distill_chunk", "reduce"])
distill_builder.add_conditional_edges("distill_chunk", route_notes, ["plan_reduce", "reduce"])
distill_builder.add_conditional_edges("plan_reduce", route_reduce, ["collapse_group", "reduce"])
distill_builder.add_edge("collapse_group", "plan_reduce")
distill_builder.add_edge("reduce", END)

distill_graph = distill_builder.compile(name="distill")
