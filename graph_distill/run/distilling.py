"""Distilling conversations into files: one saved conversation, or every conversation of the
files ``distill`` is given."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from graph_distill.context import DistillContext
from graph_distill.distill.graph import distill_graph
from graph_distill.files.readers import SourceConversation, read_conversations
from graph_distill.files.writing import distilled_file, write_json_atomic
from graph_distill.llm.models import model_name
from graph_distill.llm.resources import RunResources, with_resources
from graph_distill.run.ledger import (
    MIMO_V2_FLASH_PRICES,
    CostLedger,
    Prices,
)
from graph_distill.run.progress import Reporter
from graph_distill.run.summary import (
    RETRY_HINT,
    Graph,
    RunSummary,
    gather_or_abort,
    record_failure,
    reported,
    stop_on_write_error,
)


async def distill_source(
    source: SourceConversation,
    out_path: Path,
    ctx: DistillContext,
    concurrency: int,
    reporter: Reporter,
    summary: RunSummary,
    *,
    graph: Graph = distill_graph,
    thread_id: str | None = None,
    retry_hint: str = RETRY_HINT,
) -> bool:
    """Distill one conversation into ``out_path``; failures are recorded, not raised. With a
    ``thread_id`` (and a ``graph`` compiled with a checkpointer) a distillation cut short goes
    on where it stopped: chunks already distilled are not asked again. True when written."""
    config: RunnableConfig = {
        "max_concurrency": concurrency,
        "callbacks": [summary.ledger.callback("distillation")],
    }
    config = with_resources(config, summary.resources)
    inputs: dict[str, Any] | None = {"conversation": source.messages}
    if thread_id is not None:
        config["configurable"]["thread_id"] = thread_id
        if (await graph.aget_state(config)).created_at is not None:
            inputs = None
    try:
        result = await graph.ainvoke(inputs, config, context=ctx)
    except Exception as error:
        record_failure(summary, reporter, source.source, error)
        return False
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
    with stop_on_write_error(out_path.parent, retry_hint):
        write_json_atomic(out_path, data)
    summary.distilled.append(out_path)
    reporter.distilled(source.source, str(out_path))
    return True


async def distill_inputs(
    inputs: Sequence[Path],
    out_for: Callable[[SourceConversation], Path],
    ctx: DistillContext,
    *,
    concurrency: int,
    force: bool,
    reporter: Reporter,
    prices: Prices = MIMO_V2_FLASH_PRICES,
    report_dir: Path | None = None,
) -> RunSummary:
    """Distill every conversation in ``inputs`` (files in parallel, ``concurrency`` at once);
    with a ``report_dir``, its calls, tokens and cost go to ``run_report.json`` there."""
    summary = RunSummary(ledger=CostLedger(prices), resources=RunResources(ctx.requests_per_minute))
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
    if report_dir is None:
        async with summary.resources:
            await gather_or_abort([one(s) for s in sources])
        return summary
    settings = {
        "inputs": [str(Path(path).absolute()) for path in inputs],
        "concurrency": concurrency,
        "force": force,
    }
    with reported(summary, report_dir, ctx, settings, RETRY_HINT):
        async with summary.resources:
            await gather_or_abort([one(s) for s in sources])
    return summary
