"""Nodes and routes of the distillation graph: split, map chunks to notes, reduce.

Routes and nodes are coroutines (LangGraph runs plain functions in a worker thread), except
``split``, whose token count may load the encoding file: that must not block the loop."""

from __future__ import annotations

import logging
import operator
from typing import Any, Literal

import openai
from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langchain_openai import ChatOpenAI
from langgraph.runtime import Runtime
from langgraph.types import Send

from graph_distill.context import DistillContext
from graph_distill.distill.layout import render_chunk_notes, render_summary
from graph_distill.distill.notes import (
    cite_within,
    clean_notes,
    combine_notes,
    empty_notes,
    group_for_budget,
    merge_repeats,
    recover_citations,
)
from graph_distill.distill.prompt import (
    chunk_prompt,
    merge_prompt,
    raw_chunk_text,
    raw_summary_prompt,
)
from graph_distill.distill.splitting import Chunk, split_conversation
from graph_distill.distill.state import (
    NOTES_SPEC,
    ChunkData,
    ChunkTask,
    CollapsedNotes,
    CollapseTask,
    DistilledChunk,
    DistillProgress,
    DistillState,
    Notes,
)
from graph_distill.llm.models import chat_model, is_transient
from graph_distill.llm.resources import RunResources, node_resources
from graph_distill.llm.structured import StructuredReply, ainvoke_structured
from graph_distill.llm.usage import Usage, empty_usage, usage_of

logger = logging.getLogger(__name__)


def split(state: DistillState, runtime: Runtime[DistillContext]) -> dict[str, Any]:
    ctx = _context(runtime)
    chunks = split_conversation(
        state["conversation"],
        ctx.split_method,
        max_tokens=ctx.max_tokens,
        overlap_tokens=ctx.token_overlap(),
        max_turns=ctx.max_turns,
        overlap_turns=ctx.turn_overlap(),
    )
    runtime.stream_writer(DistillProgress(kind="chunks", chunks=len(chunks)))
    return {"chunks": [_chunk_data(chunk) for chunk in chunks], "distill_usage": empty_usage()}


async def route_chunks(state: DistillState) -> list[Send] | Literal["reduce"]:
    """One task per chunk (the map); straight to the end when there is nothing to distill."""
    sends = [Send("distill_chunk", ChunkTask(chunk=chunk)) for chunk in state["chunks"]]
    return sends or "reduce"


async def route_notes(state: DistillState) -> Literal["plan_reduce", "reduce"]:
    """Notes of several chunks are planned for merging; one chunk's go straight to reduce (a
    step less for most records of a dataset)."""
    return "plan_reduce" if len(state["chunks"]) > 1 else "reduce"


async def distill_chunk(
    task: ChunkTask, runtime: Runtime[DistillContext], config: RunnableConfig
) -> dict[str, Any]:
    chunk = task["chunk"]
    reply = await _structured(config, _context(runtime), chunk_prompt(chunk))
    record = distilled_chunk(chunk, reply)
    runtime.stream_writer(
        DistillProgress(kind="chunk_done", index=chunk["index"], status=record["status"])
    )
    return {"chunk_notes": [record], "distill_usage": reply.usage}


async def plan_reduce(state: DistillState, runtime: Runtime[DistillContext]) -> dict[str, Any]:
    """The notes to merge next (repeats merged), grouped to fit the notes budget."""
    reduce_round, level = _merged_level(state)
    groups = group_for_budget(level, _context(runtime).notes_budget_tokens)
    return {"notes_level": level, "notes_groups": groups, "reduce_round": reduce_round}


async def route_reduce(state: DistillState) -> list[Send] | Literal["reduce"]:
    """Collapse the groups (another round) while the notes need more than one merge call."""
    groups = state["notes_groups"]
    if len(groups) < 2:
        return "reduce"
    next_round = state["reduce_round"] + 1
    return [
        Send("collapse_group", CollapseTask(group=group, round=next_round, index=index))
        for index, group in enumerate(groups)
    ]


async def collapse_group(
    task: CollapseTask, runtime: Runtime[DistillContext], config: RunnableConfig
) -> dict[str, Any]:
    notes, usage = await _merge(config, _context(runtime), "distill_collapse", task["group"])
    collapsed = CollapsedNotes(round=task["round"], index=task["index"], notes=notes)
    return {"collapsed": [collapsed], "distill_usage": usage}


async def reduce(
    state: DistillState, runtime: Runtime[DistillContext], config: RunnableConfig
) -> dict[str, Any]:
    """Final notes and summary. A single notes object (one distilled chunk) is used as is,
    without a call; when no chunk got usable notes, the summary comes from the raw text."""
    level = state.get("notes_level")
    if level is None:  # no merge was planned: at most one chunk
        level = _merged_level(state)[1]
    chunks = sorted(state.get("chunk_notes") or [], key=operator.itemgetter("chunk_index"))
    ctx = _context(runtime)
    usage = empty_usage()
    if len(level) > 1:
        merged, usage = await _merge(config, ctx, "distill_reduce", level)
        final = merge_repeats([merged])[0]
    else:
        final = level[0] if level else empty_notes()
    if level or not chunks:
        summary = render_summary(final) if level else ""
    else:
        summary, usage = await _raw_summary(config, ctx, chunks)
    return {
        "distilled_chunks": chunks,
        "final_notes": final,
        "final_summary": summary,
        "distill_usage": usage,
    }


def _context(runtime: Runtime[DistillContext]) -> DistillContext:
    return runtime.context or DistillContext()


def _model(ctx: DistillContext, resources: RunResources) -> ChatOpenAI:
    temperature, max_tokens = ctx.distill_temperature, ctx.distill_max_output_tokens
    return chat_model(
        ctx, "distill", temperature=temperature, max_tokens=max_tokens, resources=resources
    )


async def _structured(
    config: RunnableConfig, ctx: DistillContext, prompt: list[BaseMessage]
) -> StructuredReply:
    """One distillation call for notes, within the run's bound on such calls."""
    async with node_resources(config, ctx) as resources, resources.distill_slot():
        return await ainvoke_structured(
            _model(ctx, resources), prompt, NOTES_SPEC, resources.levels
        )


async def _plain(
    config: RunnableConfig, ctx: DistillContext, prompt: list[BaseMessage]
) -> BaseMessage:
    """One distillation call for plain text, within the run's bound on such calls."""
    async with node_resources(config, ctx) as resources, resources.distill_slot():
        return await _model(ctx, resources).ainvoke(prompt)


async def _raw_summary(
    config: RunnableConfig, ctx: DistillContext, chunks: list[DistilledChunk]
) -> tuple[str, Usage]:
    """A plain-text summary of chunks that got no notes, from their messages (each chunk cut
    to its share of the notes budget); the chunks' own raw replies if that call fails too."""
    share = max(1, ctx.notes_budget_tokens // len(chunks))
    text = "\n\n".join(raw_chunk_text(chunk, share) for chunk in chunks)
    try:
        reply = await _plain(config, ctx, raw_summary_prompt(text))
    except Exception as error:
        if is_transient(error) or isinstance(error, openai.AuthenticationError):
            raise  # the node's retry policy, or the run, deals with these
        logger.warning("summarizing raw chunks failed (%s); using their text", error)
        return "\n\n".join(c["distilled_content"] for c in chunks if c["distilled_content"]), (
            empty_usage()
        )
    return reply.text.strip(), usage_of(reply)


def _chunk_data(chunk: Chunk) -> ChunkData:
    return ChunkData(
        index=chunk.index,
        messages=chunk.messages,
        turn_range=list(chunk.turn_range),
        tokens=chunk.tokens,
    )


def _merged_level(state: DistillState) -> tuple[int, list[Notes]]:
    """The latest level's round and its notes, repeats merged: what the next merge takes."""
    reduce_round, level = _latest_level(state)
    return reduce_round, merge_repeats(level)


def _latest_level(state: DistillState) -> tuple[int, list[Notes]]:
    """Notes of the latest collapse round, else of the chunks distilled without error."""
    collapsed = state.get("collapsed") or []
    if not collapsed:
        chunks = sorted(state.get("chunk_notes") or [], key=operator.itemgetter("chunk_index"))
        return 0, [chunk["notes"] for chunk in chunks if chunk["status"] == "ok"]
    latest = max(entry["round"] for entry in collapsed)
    entries = [entry for entry in collapsed if entry["round"] == latest]
    return latest, [entry["notes"] for entry in sorted(entries, key=operator.itemgetter("index"))]


async def _merge(
    config: RunnableConfig, ctx: DistillContext, prompt: str, sources: list[Notes]
) -> tuple[Notes, Usage]:
    """One model call merging ``sources``; when it fails, their plain union (nothing lost)."""
    reply = await _structured(config, ctx, merge_prompt(prompt, sources))
    if reply.value is None:
        logger.warning("merging %d notes failed (%s); using their union", len(sources), reply.error)
        return combine_notes(sources), reply.usage
    return recover_citations(clean_notes(reply.value), sources), reply.usage


def distilled_chunk(chunk: ChunkData, reply: StructuredReply) -> DistilledChunk:
    """The output record of one chunk: its notes, or the raw reply when there are none."""
    record = DistilledChunk(
        chunk_index=chunk["index"],
        turn_range=list(chunk["turn_range"]),
        original_messages=[{"role": m["role"], "content": m["content"]} for m in chunk["messages"]],
    )
    if reply.value is None:
        return DistilledChunk(
            **record,
            distilled_content=reply.text,
            notes=empty_notes(),
            status="raw",
            error=reply.error or "the reply could not be used",
        )
    turns = sorted({message["turn"] for message in chunk["messages"]})
    notes = cite_within(clean_notes(reply.value), set(turns), turns)
    return DistilledChunk(
        **record, distilled_content=render_chunk_notes(notes), notes=notes, status="ok"
    )
