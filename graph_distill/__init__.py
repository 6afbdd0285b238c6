"""graph-distill: long synthetic conversations and their distillation, as LangGraph graphs.

Each graph is exported as a builder (to compile with your own checkpointer) and as a
compiled graph without one (for ``langgraph dev`` and for embedding as a subgraph node).
"""

from graph_distill.context import (
    ConversationContext,
    DistillContext,
    ModelContext,
    PipelineContext,
)
from graph_distill.conversation.graph import conversation_builder, conversation_graph
from graph_distill.conversation.state import ConversationInput, ConversationOutput
from graph_distill.distill.graph import DistillInput, DistillOutput, distill_builder, distill_graph
from graph_distill.pipeline import PipelineOutput, pipeline_builder, pipeline_graph

__all__ = [
    "ConversationContext",
    "ConversationInput",
    "ConversationOutput",
    "DistillContext",
    "DistillInput",
    "DistillOutput",
    "ModelContext",
    "PipelineContext",
    "PipelineOutput",
    "conversation_builder",
    "conversation_graph",
    "distill_builder",
    "distill_graph",
    "pipeline_builder",
    "pipeline_graph",
]
