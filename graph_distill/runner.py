"""Batch runner: many conversations at once, each saved and distilled as soon as it ends.

Runs are durable: both graphs run with a checkpointer (one SQLite database in the conversation
directory, thread id = conversation id) and a manifest records how far each conversation got,
so a killed or interrupted run resumes where it stopped (``RunPlan.run_id``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import openai
from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph

from graph_distill.context import ConversationContext, DistillContext, ModelContext
from graph_distill.conversation_graph import conversation_builder, recursion_limit
from graph_distill.distill_graph import distill_builder, distill_graph
from graph_distill.durability import (
    ItemStatus,
    RunCheckpointSaver,
    RunItem,
    RunManifest,
    hold_run,
    new_run_id,
    open_store,
)
from graph_distill.formats import (
    RUN_REPORT_NAME,
    SourceConversation,
    conversation_file,
    distilled_file,
    distilled_path,
    read_conversations,
    reserve_conversation_path,
    write_if_free,
    write_json_atomic,
)
from graph_distill.ledger import (
    MIMO_V2_FLASH_PRICES,
    CostLedger,
    Prices,
    format_duration,
    format_usd,
    run_report,
)
from graph_distill.models import describe_error, model_name
from graph_distill.progress import Reporter
from graph_distill.scenarios import Scenario, pick_scenario
from graph_distill.throttle import shared_throttle

Graph = CompiledStateGraph[Any, Any, Any, Any]


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
    # An unfinished run recorded in conversation_dir to finish; None starts a new run.
    run_id: str | None = None
    # Tokens (input + output, this invocation) after which no new conversation starts.
    budget_tokens: int | None = None
    prices: Prices = MIMO_V2_FLASH_PRICES


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    distilled: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    # Conversation files an earlier, interrupted attempt of the run had already saved.
    kept: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    rounds: int = 0
    ledger: CostLedger = field(default_factory=CostLedger)
    run_id: str | None = None
    # Conversations of the run not yet saved (and distilled): what --resume would retry.
    unfinished: int = 0
    # Conversations not started because the token budget was spent.
    not_started: int = 0
    report_path: Path | None = None

    def closing_line(self) -> str:
        total = self.ledger.total()
        parts = [
            f"{len(self.kept)} kept from before" if self.kept else "",
            f"{len(self.written)} conversation file(s) written ({self.rounds} rounds)"
            if self.written or not self.distilled
            else "",
            f"{len(self.distilled)} distilled file(s)" if self.distilled or self.written else "",
            f"{len(self.skipped)} skipped (already distilled)" if self.skipped else "",
            f"{total.usage['calls']:,} model calls, est. {format_usd(total.cost_usd)}",
            f"{len(self.failures)} failure(s)",
            format_duration(total.wall_seconds or 0.0),
        ]
        return "; ".join(p for p in parts if p)

    def write_report(
        self, directory: Path, context: ModelContext, settings: dict[str, Any]
    ) -> None:
        """Write ``run_report.json`` into ``directory`` unless the run did nothing at all."""
        if not (self.ledger.total().usage["calls"] or self.failures or self.not_started):
            return
        requests = shared_throttle(context.requests_per_minute, asyncio.get_running_loop())
        path = Path(directory) / RUN_REPORT_NAME
        report = run_report(self, context, throttle=requests.stats(), settings=settings)
        write_json_atomic(path, report)
        self.report_path = path


def conversation_seed(run_seed: int, index: int) -> int:
    """Each conversation's seed: reproducible from the run seed, distinct per index."""
    return random.Random(f"{run_seed}:{index}").randrange(2**31)


def run_settings(
    plan: RunPlan, conversation_ctx: ConversationContext, distill_ctx: DistillContext
) -> dict[str, Any]:
    """What a resumed run must share with the run it finishes (as JSON values)."""
    texts = json.dumps([s.to_record() for s in plan.scenarios], sort_keys=True)
    settings: dict[str, Any] = {
        "count": plan.count,
        "seed": plan.seed,
        "min_rounds": conversation_ctx.min_rounds,
        "max_rounds": conversation_ctx.max_rounds,
        "typo_rate": conversation_ctx.typo_rate,
        "scenarios": [s.key for s in plan.scenarios],
        "scenario_texts": hashlib.sha256(texts.encode()).hexdigest()[:16],
        "distill": plan.distill,
    }
    if plan.distill:
        settings |= {
            "distilled_dir": str(Path(plan.distilled_dir).absolute()),
            "split_method": distill_ctx.split_method,
            "max_tokens": distill_ctx.max_tokens,
            "overlap_tokens": distill_ctx.overlap_tokens,
            "max_turns": distill_ctx.max_turns,
        }
    return settings


async def run_conversations(
    plan: RunPlan,
    conversation_ctx: ConversationContext,
    distill_ctx: DistillContext,
    reporter: Reporter,
) -> RunSummary:
    """Generate ``plan.count`` conversations, ``plan.concurrency`` at a time, or finish the
    unfinished run ``plan.run_id`` (ResumeError when the directory has no such run). The run's
    calls, tokens and cost go to ``run_report.json`` in the conversation directory, also when
    it is cut short."""
    # A new run is held before it is recorded: a concurrent --resume never sees it unheld.
    run_id = plan.run_id or new_run_id()
    async with (
        hold_run(plan.conversation_dir, run_id),
        open_store(plan.conversation_dir) as (saver, manifest),
    ):
        shared_settings = run_settings(plan, conversation_ctx, distill_ctx)
        if plan.run_id is None:
            await manifest.create(shared_settings, plan.count, run_id)
        else:
            await manifest.get(run_id)
        run = _DurableRun(plan, conversation_ctx, distill_ctx, reporter, manifest, run_id, saver)
        settings = {
            **shared_settings,
            "run_id": run_id,
            "conversation_dir": str(Path(plan.conversation_dir).absolute()),
            "concurrency": plan.concurrency,
            "budget_tokens": plan.budget_tokens,
        }
        with _reported(run.summary, plan.conversation_dir, conversation_ctx, settings, RESUME_HINT):
            await run.execute()
    return run.summary


class _DurableRun:
    """One run's conversations: generated, saved and distilled, each step recorded."""

    def __init__(
        self,
        plan: RunPlan,
        conversation_ctx: ConversationContext,
        distill_ctx: DistillContext,
        reporter: Reporter,
        manifest: RunManifest,
        run_id: str,
        saver: RunCheckpointSaver,
    ) -> None:
        self.plan = plan
        self.conversation_ctx = conversation_ctx
        self.distill_ctx = distill_ctx
        self.reporter = reporter
        self.manifest = manifest
        self.run_id = run_id
        self.saver = saver
        self.summary = RunSummary(
            run_id=run_id, ledger=CostLedger(plan.prices, budget_tokens=plan.budget_tokens)
        )
        self.conversation_graph = conversation_builder.compile(
            checkpointer=saver, name="conversation"
        )
        self.distill_graph = distill_builder.compile(checkpointer=saver, name="distill")
        self.gate = asyncio.Semaphore(plan.concurrency)

    async def execute(self) -> None:
        distills: list[asyncio.Task[None]] = []

        async def one(item: RunItem) -> None:
            source = await self._conversation(item)
            if source is not None and self.plan.distill:
                distills.append(asyncio.create_task(self._distill(item, source)))

        try:
            await _gather_or_abort([one(item) for item in await self.manifest.items(self.run_id)])
            await _gather_or_abort(distills)
        finally:
            await _cancel(distills)
        await self._close_if_complete()

    async def _conversation(self, item: RunItem) -> SourceConversation | None:
        """The saved conversation, generated now or before; None when it failed or when an
        earlier attempt already distilled it."""
        if item.status is ItemStatus.WRITING and _holds(item.conversation_path, item):
            await self.manifest.set_status(self.run_id, item.index, ItemStatus.SAVED)
            item = replace(item, status=ItemStatus.SAVED)
        if item.status in (ItemStatus.SAVED, ItemStatus.DISTILLED):
            return self._kept(item)
        async with self.gate:
            budget = self.summary.ledger.budget
            if budget.exhausted:
                if not self.summary.not_started:
                    self.reporter.note(
                        f"{budget.message()}: no new conversation starts, running ones finish"
                    )
                self.summary.not_started += 1
                return None
            return await self._generate(item)

    def _kept(self, item: RunItem) -> SourceConversation | None:
        assert item.conversation_path is not None
        self.summary.kept.append(item.conversation_path)
        if item.status is ItemStatus.DISTILLED or not self.plan.distill:
            return None
        try:
            return read_conversations(item.conversation_path)[0]
        except ValueError as error:
            self.summary.failures.append((str(item.conversation_path), str(error)))
            self.reporter.failed(str(item.conversation_path), str(error))
            return None

    async def _generate(self, item: RunItem) -> SourceConversation | None:
        ctx = self.conversation_ctx
        seed = conversation_seed(self.plan.seed, item.index)
        scenario = pick_scenario(self.plan.scenarios, random.Random(seed))
        label = f"#{item.index + 1} {scenario.key}"
        config: RunnableConfig = {
            "configurable": {"thread_id": item.conversation_id},
            "recursion_limit": recursion_limit(ctx.max_rounds),
            "callbacks": [self.summary.ledger.callback("generation")],
        }
        snapshot = await self.conversation_graph.aget_state(config)
        inputs: dict[str, Any] | None = None
        held_user_text: list[str] = []
        if snapshot.created_at is None:
            inputs = {
                "scenario": scenario.to_record(),
                "scenario_key": scenario.key,
                "seed": seed,
                "conversation_id": item.conversation_id,
            }
            await self.manifest.set_status(self.run_id, item.index, ItemStatus.GENERATING)
        else:
            held_user_text = _report_resumed(snapshot.values, label, self.reporter)
        try:
            output = await _stream_conversation(
                self.conversation_graph, inputs, config, ctx, label, self.reporter, held_user_text
            )
        except Exception as error:
            _record_failure(self.summary, self.reporter, label, error)
            return None
        record = output["conversation_record"]
        with _stop_on_write_error(self.plan.conversation_dir, RESUME_HINT):
            path = await self._save(item, scenario.key, record)
        await self.saver.adelete_thread(item.conversation_id)
        self.summary.written.append(path)
        self.summary.rounds += record["total_rounds"]
        self.reporter.saved(label, str(path), record["total_rounds"])
        return SourceConversation(
            source=str(path), stem=path.stem, messages=record["conversation"], record=record
        )

    async def _save(self, item: RunItem, scenario_key: str, record: dict[str, Any]) -> Path:
        """Write the conversation under a new name, recorded before the write so that a crash
        in between cannot lead to a second file of it."""
        data = conversation_file(record)
        while True:
            path = reserve_conversation_path(
                self.plan.conversation_dir, scenario_key, datetime.now()
            )
            await self.manifest.set_status(
                self.run_id, item.index, ItemStatus.WRITING, conversation_path=path
            )
            if write_if_free(path, data):
                await self.manifest.set_status(self.run_id, item.index, ItemStatus.SAVED)
                return path

    async def _distill(self, item: RunItem, source: SourceConversation) -> None:
        out_path = distilled_path(self.plan.distilled_dir, source.stem)
        written = await distill_source(
            source,
            out_path,
            self.distill_ctx,
            self.plan.concurrency,
            self.reporter,
            self.summary,
            graph=self.distill_graph,
            thread_id=item.distill_thread,
            retry_hint=RESUME_HINT,
        )
        if written:
            await self.manifest.set_status(
                self.run_id, item.index, ItemStatus.DISTILLED, distilled_path=out_path
            )
            await self.saver.adelete_thread(item.distill_thread)

    async def _close_if_complete(self) -> None:
        """Once every conversation is done, drop the run's checkpoints and mark it complete."""
        done = ItemStatus.DISTILLED if self.plan.distill else ItemStatus.SAVED
        items = await self.manifest.items(self.run_id)
        self.summary.unfinished = sum(item.status is not done for item in items)
        if self.summary.unfinished:
            return
        for item in items:
            await self.saver.adelete_thread(item.conversation_id)
            await self.saver.adelete_thread(item.distill_thread)
        await self.manifest.mark_complete(self.run_id)


def _holds(path: Path | None, item: RunItem) -> bool:
    """Whether ``path`` is the saved file of ``item`` (files are written whole or not at all)."""
    if path is None:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("id") == item.conversation_id


RESUME_HINT = "run the same command with --resume"
RETRY_HINT = "run the same command again"


@contextmanager
def _stop_on_write_error(directory: Path, hint: str) -> Iterator[None]:
    """A file that cannot be written (disk full, no permission) dooms the run: stop it with a
    plain message instead of paying for work that cannot be kept."""
    try:
        yield
    except FileExistsError:
        raise
    except OSError as error:
        reason = error.strerror or str(error)
        raise FatalRunError(
            f"cannot write in {directory}: {reason}. Nothing half-written was left; fix that, "
            f"then {hint}"
        ) from error


@contextmanager
def _reported(
    summary: RunSummary,
    directory: Path,
    context: ModelContext,
    settings: dict[str, Any],
    hint: str,
) -> Iterator[None]:
    """Write the run report once the work is over, also when it was cut short (then only if
    that can be done: the report must not hide why the work stopped)."""
    try:
        yield
    except BaseException:
        with suppress(OSError):
            summary.write_report(directory, context, settings)
        raise
    with _stop_on_write_error(directory, hint):
        summary.write_report(directory, context, settings)


async def _cancel(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _gather_or_abort(jobs: Sequence[Awaitable[None]]) -> None:
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        await asyncio.gather(*tasks)
    finally:
        await _cancel(tasks)


def _report_resumed(values: dict[str, Any], label: str, reporter: Reporter) -> list[str]:
    """Show where a resumed conversation stands; the latest user message, for the progress."""
    target = values.get("target_rounds")
    if target is not None:
        rounds = values.get("rounds", 0)
        reporter.started(label, target)
        reporter.round_done(label, rounds)
        reporter.note(f"{label}: resumed at round {rounds} of {target}")
    messages = values.get("conversation_messages") or []
    return [messages[-1].text] if messages and isinstance(messages[-1], HumanMessage) else []


async def _stream_conversation(
    graph: Graph,
    inputs: dict[str, Any] | None,
    config: RunnableConfig,
    ctx: ConversationContext,
    label: str,
    reporter: Reporter,
    held_user_text: list[str],
) -> dict[str, Any]:
    """Run (or, with no ``inputs``, resume) one conversation; its final values."""
    output: dict[str, Any] = {}
    modes = ["updates", "values", *(["messages"] if reporter.shows_tokens else [])]
    async for mode, data in graph.astream(inputs, config, context=ctx, stream_mode=modes):
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
            shown = [noised[-1].text] if noised else held_user_text
            if shown:
                reporter.user_message(label, shown[0])
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
        _record_failure(summary, reporter, source.source, error)
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
    with _stop_on_write_error(out_path.parent, retry_hint):
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
    summary = RunSummary(ledger=CostLedger(prices))
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
        await _gather_or_abort([one(s) for s in sources])
        return summary
    settings = {
        "inputs": [str(Path(path).absolute()) for path in inputs],
        "concurrency": concurrency,
        "force": force,
    }
    with _reported(summary, report_dir, ctx, settings, RETRY_HINT):
        await _gather_or_abort([one(s) for s in sources])
    return summary
