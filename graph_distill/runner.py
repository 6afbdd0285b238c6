"""Batch runner: many conversations at once, each saved and distilled as soon as it ends."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import openai
from langchain_core.messages import AIMessageChunk

from graph_distill.context import ConversationContext, DistillContext
from graph_distill.conversation_graph import conversation_graph, recursion_limit
from graph_distill.distill_graph import distill_graph
from graph_distill.formats import (
    SourceConversation,
    conversation_file,
    distilled_file,
    distilled_path,
    read_conversations,
    write_json_atomic,
    write_new_conversation,
)
from graph_distill.models import describe_error, model_name
from graph_distill.progress import Reporter
from graph_distill.scenarios import Scenario, pick_scenario
from graph_distill.usage import Usage, add_usage, empty_usage


class FatalRunError(RuntimeError):
    """A failure that dooms every item (the key was refused): the run stops at once."""


@dataclass(kw_only=True)
class RunPlan:
    count: int
    conversation_dir: Path
    distilled_dir: Path
    scenarios: Sequence[Scenario]
    seed: int
    concurrency: int = 4
    distill: bool = True


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    distilled: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    rounds: int = 0
    usage: Usage = field(default_factory=empty_usage)
    started: float = field(default_factory=time.monotonic)

    def add_usage(self, usage: Usage | None) -> None:
        self.usage = add_usage(self.usage, usage)

    def closing_line(self) -> str:
        u = self.usage
        seconds = time.monotonic() - self.started
        parts = [
            f"{len(self.written)} conversation file(s) written ({self.rounds} rounds)"
            if self.written or not self.distilled
            else "",
            f"{len(self.distilled)} distilled file(s)" if self.distilled or self.written else "",
            f"{len(self.skipped)} skipped (already distilled)" if self.skipped else "",
            f"tokens: {u['input_tokens']:,} in ({u['cached_tokens']:,} cached), "
            f"{u['output_tokens']:,} out, {u['calls']:,} calls",
            f"{len(self.failures)} failure(s)",
            f"{seconds:.1f}s",
        ]
        return "; ".join(p for p in parts if p)


def conversation_seed(run_seed: int, index: int) -> int:
    """Each conversation's seed: reproducible from the run seed, distinct per index."""
    return random.Random(f"{run_seed}:{index}").randrange(2**31)


async def run_conversations(
    plan: RunPlan,
    conversation_ctx: ConversationContext,
    distill_ctx: DistillContext,
    reporter: Reporter,
) -> RunSummary:
    """Generate ``plan.count`` conversations, ``plan.concurrency`` at a time."""
    summary = RunSummary()
    gate = asyncio.Semaphore(plan.concurrency)
    distills: list[asyncio.Task[None]] = []

    async def one(index: int) -> None:
        async with gate:
            path, record = await _generate(index, plan, conversation_ctx, reporter, summary)
        if path is not None and plan.distill:
            distills.append(
                asyncio.create_task(
                    _distill_saved(path, record, plan, distill_ctx, reporter, summary)
                )
            )

    await _gather_or_abort([one(i) for i in range(plan.count)])
    await _gather_or_abort(distills)
    return summary


async def _gather_or_abort(jobs: Sequence[Awaitable[None]]) -> None:
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _generate(
    index: int,
    plan: RunPlan,
    ctx: ConversationContext,
    reporter: Reporter,
    summary: RunSummary,
) -> tuple[Path | None, dict[str, Any]]:
    seed = conversation_seed(plan.seed, index)
    scenario = pick_scenario(plan.scenarios, random.Random(seed))
    label = f"#{index + 1} {scenario.key}"
    inputs = {"scenario": scenario.to_record(), "scenario_key": scenario.key, "seed": seed}
    try:
        output = await _stream_conversation(inputs, ctx, label, reporter)
    except Exception as error:
        _record_failure(summary, reporter, label, error)
        return None, {}
    record = output["conversation_record"]
    path = write_new_conversation(
        plan.conversation_dir, scenario.key, datetime.now(), conversation_file(record)
    )
    summary.written.append(path)
    summary.rounds += record["total_rounds"]
    summary.add_usage(record["metadata"]["usage"])
    reporter.saved(label, str(path), record["total_rounds"])
    return path, record


async def _stream_conversation(
    inputs: dict[str, Any], ctx: ConversationContext, label: str, reporter: Reporter
) -> dict[str, Any]:
    config = {"recursion_limit": recursion_limit(ctx.max_rounds)}
    output: dict[str, Any] = {}
    held_user_text: list[str] = []
    modes = ["updates", "values", *(["messages"] if reporter.shows_tokens else [])]
    async for mode, data in conversation_graph.astream(
        inputs, config, context=ctx, stream_mode=modes
    ):
        if mode == "messages":
            chunk, meta = data
            if meta.get("langgraph_node") == "respond" and isinstance(chunk, AIMessageChunk):
                reporter.assistant_token(label, chunk.text)
        elif mode == "updates":
            _report_update(data, label, reporter, held_user_text)
        else:
            output = data
    return output


def _report_update(
    update: dict[str, Any], label: str, reporter: Reporter, held_user_text: list[str]
) -> None:
    """Progress from node updates; the user message is shown once noise has been applied."""
    for node, values in update.items():
        values = values or {}
        if node == "start":
            reporter.started(label, values["target_rounds"])
        elif node == "simulate_user":
            held_user_text[:] = [values["conversation_messages"][-1].text]
        elif node == "add_noise":
            noised = values.get("conversation_messages")
            reporter.user_message(label, noised[-1].text if noised else held_user_text[0])
        elif node == "respond":
            reporter.round_done(label, values["rounds"])
        elif node == "switch_topic":
            switch = values["topic_switches"][-1]
            reporter.topic_switch(label, switch["reason"], switch["to_topic"])


def _record_failure(summary: RunSummary, reporter: Reporter, label: str, error: Exception) -> None:
    if isinstance(error, openai.AuthenticationError):
        raise FatalRunError(describe_error(error)) from error
    reason = describe_error(error)
    summary.failures.append((label, reason))
    reporter.failed(label, reason)


async def _distill_saved(
    path: Path,
    record: dict[str, Any],
    plan: RunPlan,
    ctx: DistillContext,
    reporter: Reporter,
    summary: RunSummary,
) -> None:
    source = SourceConversation(
        source=str(path), stem=path.stem, messages=record["conversation"], record=record
    )
    await distill_source(
        source,
        distilled_path(plan.distilled_dir, path.stem),
        ctx,
        plan.concurrency,
        reporter,
        summary,
    )


async def distill_source(
    source: SourceConversation,
    out_path: Path,
    ctx: DistillContext,
    concurrency: int,
    reporter: Reporter,
    summary: RunSummary,
) -> None:
    """Distill one conversation into ``out_path``; failures are recorded, not raised."""
    try:
        result = await distill_graph.ainvoke(
            {"conversation": source.messages}, {"max_concurrency": concurrency}, context=ctx
        )
    except Exception as error:
        _record_failure(summary, reporter, source.source, error)
        return
    metadata = {
        "model": model_name(ctx, "distill"),
        "split_method": ctx.split_method,
        "max_tokens": ctx.max_tokens,
        "overlap_tokens": ctx.overlap_tokens,
        "max_turns": ctx.max_turns,
        "usage": result["distill_usage"],
    }
    data = distilled_file(
        source=source.source,
        distilled_chunks=result["distilled_chunks"],
        final_summary=result["final_summary"],
        final_notes=result.get("final_notes"),
        metadata=metadata,
    )
    write_json_atomic(out_path, data)
    summary.distilled.append(out_path)
    summary.add_usage(result["distill_usage"])
    reporter.distilled(source.source, str(out_path))


async def distill_inputs(
    inputs: Sequence[Path],
    out_for: Callable[[SourceConversation], Path],
    ctx: DistillContext,
    *,
    concurrency: int,
    force: bool,
    reporter: Reporter,
) -> RunSummary:
    """Distill every conversation in ``inputs`` (files in parallel, ``concurrency`` at once)."""
    summary = RunSummary()
    gate = asyncio.Semaphore(concurrency)

    async def one(source: SourceConversation) -> None:
        out_path = out_for(source)
        if out_path.exists() and not force:
            summary.skipped.append(out_path)
            return
        async with gate:
            await distill_source(source, out_path, ctx, concurrency, reporter, summary)

    sources: list[SourceConversation] = []
    for path in inputs:
        try:
            sources.extend(read_conversations(path))
        except ValueError as error:
            summary.failures.append((str(path), str(error)))
            reporter.failed(str(path), str(error))
    await _gather_or_abort([one(s) for s in sources])
    return summary
