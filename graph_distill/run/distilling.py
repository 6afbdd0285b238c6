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
    inputs: dict[str, Any] | None = {"conversation": source.messages}
    if thread_id is not None:
        config["configurable"] = {"thread_id": thread_id}
        if (await graph.aget_state(config)).created_at is not None:
            inputs = None
    try:
        result = await graph.ainvoke(inputs, config, context=ctx)
    except Exception as error:
        record_failure(summary, reporter, source.source, error)
        return False
    model = model_name(ctx, "distill")
    return save_distilled(
        source.source, out_path, result, ctx, summary, reporter, retry_hint, model=model
    )


def distilled_metadata(ctx: DistillContext, usage: Any, model: str | None) -> dict[str, Any]:
    """The settings a distilled file was made with (a re-run compares them) and its usage."""
    return {
        "model": model,
        "split_method": ctx.split_method,
        "max_tokens": ctx.max_tokens,
        "overlap_tokens": ctx.token_overlap(),
        "max_turns": ctx.max_turns,
        "overlap_turns": ctx.turn_overlap(),
        "usage": usage,
    }


def save_distilled(
    source: Any,
    out_path: Path,
    result: dict[str, Any],
    ctx: DistillContext,
    summary: RunSummary,
    reporter: Reporter,
    hint: str,
    *,
    label: str | None = None,
    model: str | bool | None = True,
) -> bool:
    """Write a distill graph's ``result`` to ``out_path``. True when its notes are usable; a
    result whose every chunk was kept raw is written too, but counted as a failure (the
    summary then comes from the raw text) so that the next run redoes it. ``model``: the model
    that wrote the notes (None: unknown, a server's own)."""
    data = distilled_file(
        source=source,
        distilled_chunks=result["distilled_chunks"],
        final_summary=result["final_summary"],
        final_notes=result.get("final_notes"),
        metadata=distilled_metadata(ctx, result["distill_usage"], model),
    )
    with stop_on_write_error(out_path.parent, hint):
        write_json_atomic(out_path, data)
    chunks = result["distilled_chunks"]
    raw = sum(chunk.get("status") == "raw" for chunk in chunks)
    summary.raw_chunks += raw
    name = label or (source if isinstance(source, str) else str(out_path))
    if chunks and raw == len(chunks):
        reason = (
            f"no chunk got usable notes ({raw} kept raw); written to {out_path}, redone next time"
        )
        summary.failures.append((name, reason))
        reporter.failed(name, reason)
        return False
    summary.distilled.append(out_path)
    reporter.distilled(name, str(out_path))
    return True


def read_sources(
    inputs: Sequence[Path], summary: RunSummary, reporter: Reporter
) -> list[SourceConversation]:
    """Every conversation of ``inputs``; a file that cannot be read is a failure of its own."""
    sources: list[SourceConversation] = []
    for path in inputs:
        try:
            sources.extend(read_conversations(path))
        except ValueError as error:
            summary.failures.append((str(path), str(error)))
            reporter.failed(str(path), str(error))
    return sources


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
    summary = RunSummary(ledger=CostLedger(prices))
    gate = asyncio.Semaphore(concurrency)

    async def one(source: SourceConversation) -> None:
        out_path = out_for(source)
        if out_path.exists() and not force:
            summary.skipped.append(out_path)
            return
        async with gate:
            await distill_source(source, out_path, ctx, concurrency, reporter, summary)

    sources = read_sources(inputs, summary, reporter)
    if report_dir is None:
        await gather_or_abort([one(s) for s in sources])
        return summary
    settings = {
        "inputs": [str(Path(path).absolute()) for path in inputs],
        "concurrency": concurrency,
        "force": force,
    }
    with reported(summary, report_dir, ctx, settings, RETRY_HINT):
        await gather_or_abort([one(s) for s in sources])
    return summary
