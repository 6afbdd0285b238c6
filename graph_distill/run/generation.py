"""A run of ``run``: many conversations at once, each saved and distilled as soon as it ends.

Runs are durable: the graphs run with a checkpointer (one SQLite database in the conversation
directory, thread id = conversation id) and a manifest records how far each conversation got,
so a killed or interrupted run resumes where it stopped (``RunPlan.run_id``)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.runnables import RunnableConfig

from graph_distill.context import ConversationContext, DistillContext
from graph_distill.conversation.graph import conversation_builder, recursion_limit
from graph_distill.conversation.scenarios import Scenario, pick_scenario
from graph_distill.distill.graph import distill_builder
from graph_distill.files.readers import SourceConversation, read_conversations
from graph_distill.files.writing import (
    conversation_file,
    distilled_path,
    reserve_conversation_path,
    write_if_free,
)
from graph_distill.llm.resources import RESOURCES_KEY as RESOURCES
from graph_distill.llm.resources import RunResources
from graph_distill.run.distilling import distill_source
from graph_distill.run.ledger import (
    MIMO_V2_FLASH_PRICES,
    CostLedger,
    Prices,
)
from graph_distill.run.lock import hold_run
from graph_distill.run.progress import Reporter
from graph_distill.run.store import (
    ItemStatus,
    RunCheckpointSaver,
    RunItem,
    RunManifest,
    new_run_id,
    open_store,
)
from graph_distill.run.summary import (
    RESUME_HINT,
    Graph,
    RunSummary,
    cancel_all,
    gather_or_abort,
    record_failure,
    reported,
    stop_on_write_error,
)


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
        with reported(run.summary, plan.conversation_dir, conversation_ctx, settings, RESUME_HINT):
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
            run_id=run_id,
            ledger=CostLedger(plan.prices, budget_tokens=plan.budget_tokens),
            resources=RunResources(conversation_ctx.requests_per_minute),
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
            await gather_or_abort([one(item) for item in await self.manifest.items(self.run_id)])
            await gather_or_abort(distills)
        finally:
            await cancel_all(distills)
            await self.summary.resources.aclose()
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
            "configurable": {"thread_id": item.conversation_id, RESOURCES: self.summary.resources},
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
            record_failure(self.summary, self.reporter, label, error)
            return None
        record = output["conversation_record"]
        with stop_on_write_error(self.plan.conversation_dir, RESUME_HINT):
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
