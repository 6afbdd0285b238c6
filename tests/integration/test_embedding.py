"""The exported graphs embedded in another agent's StateGraph, against the fake model server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from langgraph.errors import GraphRecursionError
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from typing_extensions import TypedDict

from graph_distill import DistillContext, PipelineContext, distill_graph, pipeline_graph
from graph_distill.conversation.graph import recursion_limit
from tests.support.fake_openai import FakeOpenAIServer

ROUNDS = 2
# Enough rounds that the embedded conversation needs more than 25 steps (2 or 3 per round).
LONG_ROUNDS = 14
OLD_DEFAULT_RECURSION_LIMIT = 25


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def pipeline_context(server: FakeOpenAIServer) -> PipelineContext:
    return PipelineContext(
        base_url=server.base_url,
        api_key="test-key",
        model="fake-model",
        max_retries=0,
        split_method="turns",
        max_turns=4,
    )


# ---------------------------------------------------------------- pipeline as a subgraph node


class ResearchState(TypedDict, total=False):
    """A parent agent sharing the pipeline's input/output key names, plus keys of its own."""

    topic: str
    target_rounds: int
    seed: int
    conversation_record: dict[str, Any]
    final_summary: str
    report: str


def plan(state: ResearchState) -> dict[str, Any]:
    return {"seed": len(state["topic"])}


def write_report(state: ResearchState) -> dict[str, Any]:
    rounds = state["conversation_record"]["total_rounds"]
    return {"report": f"{state['topic']} ({rounds} rounds): {state['final_summary']}"}


def research_agent() -> CompiledStateGraph:
    builder = StateGraph(ResearchState, context_schema=PipelineContext)
    builder.add_node("plan", plan)
    builder.add_node("pipeline", pipeline_graph)
    builder.add_node("report", write_report)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "pipeline")
    builder.add_edge("pipeline", "report")
    builder.add_edge("report", END)
    return builder.compile()


def assert_record(record: dict[str, Any], rounds: int) -> None:
    assert record["total_rounds"] == rounds
    roles = [message["role"] for message in record["conversation"]]
    assert roles == ["user", "assistant"] * rounds


async def test_pipeline_added_directly_as_a_node(fake: FakeOpenAIServer) -> None:
    state = {"topic": "caching", "target_rounds": ROUNDS}
    out = await research_agent().ainvoke(state, context=pipeline_context(fake))

    assert_record(out["conversation_record"], ROUNDS)
    assert out["final_summary"].strip()
    assert out["topic"] == "caching"
    assert out["report"] == f"caching ({ROUNDS} rounds): {out['final_summary']}"
    assert out["seed"] == len("caching")
    assert out["conversation_record"]["metadata"]["seed"] == out["seed"]


async def test_recursion_limit_of_parent_applies_to_embedded_conversation(
    fake: FakeOpenAIServer,
) -> None:
    state = {"topic": "caching", "target_rounds": LONG_ROUNDS}
    agent = research_agent()
    with pytest.raises(GraphRecursionError):
        await agent.ainvoke(
            state,
            context=pipeline_context(fake),
            config={"recursion_limit": OLD_DEFAULT_RECURSION_LIMIT},
        )

    out = await agent.ainvoke(
        state,
        context=pipeline_context(fake),
        config={"recursion_limit": recursion_limit(LONG_ROUNDS)},
    )
    assert_record(out["conversation_record"], LONG_ROUNDS)
    assert out["report"]


# ---------------------------------------------------------------- pipeline called from a node


@dataclass(kw_only=True)
class AgentContext:
    """The parent's own settings, unrelated to graph-distill's context."""

    llm_url: str
    llm_key: str
    max_rounds: int = LONG_ROUNDS


class ChatState(TypedDict, total=False):
    subject: str
    transcript: list[dict[str, str]]
    digest: str


async def generate_transcript(state: ChatState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    settings = runtime.context
    out = await pipeline_graph.ainvoke(
        {"target_rounds": settings.max_rounds, "seed": len(state["subject"])},
        context=PipelineContext(
            base_url=settings.llm_url,
            api_key=settings.llm_key,
            model="fake-model",
            split_method="turns",
            max_turns=4,
        ),
        # Without this the call inherits the parent's recursion limit.
        config={"recursion_limit": recursion_limit(settings.max_rounds)},
    )
    record = out["conversation_record"]
    return {"transcript": record["conversation"], "digest": out["final_summary"]}


def chat_agent() -> CompiledStateGraph:
    builder = StateGraph(ChatState, context_schema=AgentContext)
    builder.add_node("generate", generate_transcript)
    builder.add_edge(START, "generate")
    builder.add_edge("generate", END)
    return builder.compile()


async def test_pipeline_called_from_a_node_maps_keys_and_context(fake: FakeOpenAIServer) -> None:
    context = AgentContext(llm_url=fake.base_url, llm_key="test-key")
    out = await chat_agent().ainvoke(
        {"subject": "gardening"},
        context=context,
        config={"recursion_limit": OLD_DEFAULT_RECURSION_LIMIT},
    )

    assert out["subject"] == "gardening"
    roles = [message["role"] for message in out["transcript"]]
    assert roles == ["user", "assistant"] * LONG_ROUNDS
    assert out["digest"].strip()
    assert set(out) == {"subject", "transcript", "digest"}


# ---------------------------------------------------------------- distill as a subgraph node


class NotesState(TypedDict, total=False):
    """A parent with a ``summary`` of its own and a ``chunks`` key distill also uses inside."""

    conversation: list[dict[str, str]]
    summary: str
    chunks: list[str]
    final_summary: str


def draft(state: NotesState) -> dict[str, Any]:
    return {"summary": "the parent's own summary", "chunks": ["parent chunk"]}


def notes_agent() -> CompiledStateGraph:
    builder = StateGraph(NotesState, context_schema=DistillContext)
    builder.add_node("draft", draft)
    builder.add_node("distill", distill_graph)
    builder.add_edge(START, "draft")
    builder.add_edge("draft", "distill")
    builder.add_edge("distill", END)
    return builder.compile()


def conversation(messages: int) -> list[dict[str, str]]:
    roles = ("user", "assistant")
    return [
        {"role": roles[turn % 2], "content": f"Message {turn} about template caching. " * 4}
        for turn in range(messages)
    ]


async def test_distill_subgraph_leaves_parent_keys_alone(fake: FakeOpenAIServer) -> None:
    context = DistillContext(
        base_url=fake.base_url, api_key="test-key", split_method="turns", max_turns=4
    )
    messages = conversation(8)
    out = await notes_agent().ainvoke({"conversation": messages}, context=context)

    assert out["summary"] == "the parent's own summary"
    assert out["chunks"] == ["parent chunk"]
    assert out["conversation"] == messages
    assert out["final_summary"].strip()
    assert out["final_summary"] != out["summary"]
    assert set(out) == set(NotesState.__annotations__)
