"""A run of ``run``: many conversations at once through the pipeline graph, each conversation
saved the moment its generation ends and distilled while others are still being generated.

Runs are durable: the graph runs with a checkpointer (one SQLite database in the conversation
directory, thread id = conversation id) and a manifest records how far each conversation got,
so a killed or interrupted run resumes where it stopped (``RunPlan.run_id``). The graphs write
no files: this module does, as their outputs arrive.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from graph_distill.context import PipelineContext
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
from graph_distill.llm.models import model_name
from graph_distill.llm.resources import RunResources, with_resources
from graph_distill.pipeline import pipeline_builder
from graph_distill.run.checkpoints import open_checkpointer
from graph_distill.run.distilling import distill_source, save_distilled
from graph_distill.run.ledger import MIMO_V2_FLASH_PRICES, CostLedger, Prices
from graph_distill.run.lock import hold_run
from graph_distill.run.manifest import (
    ItemStatus,
    RunItem,
    RunManifest,
    db_path,
    new_run_id,
    open_manifest,
)
from graph_distill.run.progress import Reporter
from graph_distill.run.summary import (
    RESUME_HINT,
    RunSummary,
    cancel_all,
    record_failure,
    reported,
    stop_on_write_error,
)

# The pipeline's top-level nodes, for the cost ledger's phases.
PIPELINE_PHASES = {"generate": "generation", "distill": "distillation"}


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
    # A conversation that ended stalled gets a replacement (at most ``count`` of them).
    replace_stalled: bool = False
    prices: Prices = MIMO_V2_FLASH_PRICES
    # What a resumed run must share with this one (stored in the manifest), by flag.
    resume_settings: dict[str, Any] = field(default_factory=dict)
    # Every setting of the run, for run_report.json.
    report_settings: dict[str, Any] = field(default_factory=dict)


def conversation_seed(run_seed: int, index: int) -> int:
    """Each conversation's seed: reproducible from the run seed, distinct per index."""
    return random.Random(f"{run_seed}:{index}").randrange(2**31)


def scenario_settings(scenarios: Sequence[Scenario]) -> dict[str, Any]:
    """The scenario pool as a resumed run must find it again, by the flags that set it."""
    texts = json.dumps([s.to_record() for s in scenarios], sort_keys=True)
    return {
        "--scenario": [s.key for s in scenarios],
        "--scenarios-file (the scenarios' texts)": hashlib.sha256(texts.encode()).hexdigest()[:16],
    }


@asynccontextmanager
async def open_run(
    plan: RunPlan,
) -> AsyncIterator[tuple[str, BaseCheckpointSaver, RunManifest]]:
    """The run of ``plan`` held by this process and recorded in the conversation directory:
    a new one, or ``plan.run_id`` (ResumeError when the directory has no such run)."""
    # A new run is held before it is recorded: a concurrent --resume never sees it unheld.
    run_id = plan.run_id or new_run_id()
    async with (
        hold_run(plan.conversation_dir, run_id),
        open_manifest(plan.conversation_dir) as manifest,
        open_checkpointer(db_path(plan.conversation_dir), stock=False) as saver,
    ):
        if plan.run_id is None:
            await manifest.create(plan.resume_settings, plan.count, run_id)
        else:
            await manifest.get(run_id)
        yield run_id, saver, manifest


async def run_conversations(plan: RunPlan, ctx: PipelineContext, reporter: Reporter) -> RunSummary:
    """Generate ``plan.count`` conversations, ``plan.concurrency`` at a time, or finish the
    unfinished run ``plan.run_id`` (ResumeError when the directory has no such run). The run's
    calls, tokens and cost go to ``run_report.json`` in the conversation directory, also when
    it is cut short."""
    async with open_run(plan) as (run_id, saver, manifest):
        run = _DurableRun(plan, ctx, reporter, manifest, run_id, saver)
        settings = {**plan.report_settings, "run_id": run_id}
        with reported(run.summary, plan.conversation_dir, ctx, settings, RESUME_HINT):
            await run.execute()
    return run.summary


class _Gate:
    """At most ``limit`` conversations generating at once; a conversation frees its place as
    soon as its generation ends (its distillation goes on beside the next one)."""

    def __init__(self, limit: int) -> None:
        self._semaphore = asyncio.Semaphore(limit)
        self._held: set[int] = set()

    async def enter(self, index: int) -> None:
        await self._semaphore.acquire()
        self._held.add(index)

    def leave(self, index: int) -> None:
        if index in self._held:
            self._held.discard(index)
            self._semaphore.release()


class _DurableRun:
    """One run's conversations: generated, saved and distilled, each step recorded."""

    def __init__(
        self,
        plan: RunPlan,
        ctx: PipelineContext,
        reporter: Reporter,
        manifest: RunManifest,
        run_id: str,
        saver: BaseCheckpointSaver,
    ) -> None:
        self.plan = plan
        self.ctx = ctx
        self.reporter = reporter
        self.manifest = manifest
        self.run_id = run_id
        self.saver = saver
        self.summary = RunSummary(
            run_id=run_id,
            ledger=CostLedger(plan.prices, budget_tokens=plan.budget_tokens),
            resources=RunResources(ctx.requests_per_minute, aiohttp=True, stock=ctx.stock),
        )
        builder = pipeline_builder if plan.distill else conversation_builder
        self.graph = builder.compile(
            checkpointer=saver, name="pipeline" if plan.distill else "conversation"
        )
        self.distill_graph = distill_builder.compile(checkpointer=saver, name="distill")
        self.gate = _Gate(plan.concurrency)
        self.tasks: list[asyncio.Future[None]] = []

    async def execute(self) -> None:
        self.tasks = [
            asyncio.ensure_future(self._item(i)) for i in await self.manifest.items(self.run_id)
        ]
        try:
            # Replacements of stalled conversations join the list as it is worked through.
            while pending := [task for task in self.tasks if not task.done()]:
                await asyncio.gather(*pending)
        finally:
            await cancel_all(self.tasks)
            await self.summary.resources.aclose()
        await self._close_if_complete()

    async def _replace_if_stalled(self, record: dict[str, Any]) -> None:
        if record["metadata"].get("termination_reason") != "stalled":
            return
        self.summary.stalled += 1
        if self.plan.replace_stalled and self.summary.replaced < self.plan.count:
            self.summary.replaced += 1
            item = await self.manifest.add_item(self.run_id)
            self.tasks.append(asyncio.ensure_future(self._item(item)))

    async def _item(self, item: RunItem) -> None:
        if item.status is ItemStatus.WRITING and holds(item.conversation_path, item):
            await self.manifest.set_status(self.run_id, item.index, ItemStatus.SAVED)
            item = replace(item, status=ItemStatus.SAVED)
        done = ItemStatus.DISTILLED if self.plan.distill else ItemStatus.SAVED
        if item.status in (ItemStatus.SAVED, ItemStatus.DISTILLED):
            assert item.conversation_path is not None
            self.summary.kept.append(item.conversation_path)
            if item.status is not done:
                await self._finish_distilling(item)
            return
        await self.gate.enter(item.index)
        try:
            if self.summary.ledger.budget.exhausted:
                self._not_started()
                return
            await self._run_graph(item)
        finally:
            self.gate.leave(item.index)

    def _not_started(self) -> None:
        if not self.summary.not_started:
            budget = self.summary.ledger.budget
            self.reporter.note(
                f"{budget.message()}: no new conversation starts, running ones finish"
            )
        self.summary.not_started += 1

    def _config(self, item: RunItem) -> RunnableConfig:
        config: RunnableConfig = {
            "configurable": {"thread_id": item.conversation_id},
            "recursion_limit": recursion_limit(self.ctx.max_rounds),
            "max_concurrency": self.plan.concurrency,
            "callbacks": [self.summary.ledger.callback(PIPELINE_PHASES)],
        }
        return with_resources(config, self.summary.resources)

    async def _run_graph(self, item: RunItem) -> None:
        """Generate (and distill) one conversation, or go on from its last checkpoint."""
        seed = conversation_seed(self.plan.seed, item.index)
        scenario = pick_scenario(self.plan.scenarios, random.Random(seed))
        label = f"#{item.index + 1} {scenario.key}"
        config = self._config(item)
        snapshot = await self.graph.aget_state(config)
        inputs: dict[str, Any] | None = None
        if snapshot.created_at is None:
            inputs = {
                "scenario": scenario.to_record(),
                "scenario_key": scenario.key,
                "seed": seed,
                "conversation_id": item.conversation_id,
            }
            await self.manifest.set_status(self.run_id, item.index, ItemStatus.GENERATING)
        else:
            _report_resumed(snapshot.values, label, self.reporter)
        saved: list[SourceConversation] = []

        async def on_generated(output: dict[str, Any]) -> None:
            saved.append(await self._save(item, label, output["conversation_record"]))
            self.gate.leave(item.index)

        if snapshot.values.get("conversation_record") and item.status is not ItemStatus.SAVED:
            # Generated, but the process died before the file was written.
            await on_generated(snapshot.values)
        try:
            output = await self._stream(inputs, config, label, None if saved else on_generated)
        except Exception as error:
            record_failure(self.summary, self.reporter, label, error)
            return
        if not saved and output.get("conversation_record"):
            await on_generated(output)
        if self.plan.distill and saved:
            await self._distilled(item, saved[0], output, label)
        elif saved:
            await self.saver.adelete_thread(item.conversation_id)

    async def _stream(
        self,
        inputs: dict[str, Any] | None,
        config: RunnableConfig,
        label: str,
        on_generated: Callable[[dict[str, Any]], Awaitable[None]] | None,
    ) -> dict[str, Any]:
        """Run (or, with no ``inputs``, resume) the graph; its final values. Progress comes
        from the nodes' custom events; the generation step's output as soon as it is done."""
        output: dict[str, Any] = {}
        modes = [
            "custom",
            "updates",
            "values",
            *(["messages"] if self.reporter.shows_tokens else []),
        ]
        stream = self.graph.astream(
            inputs, config, context=self.ctx, stream_mode=modes, subgraphs=True
        )
        async for namespace, mode, data in stream:
            if mode == "custom":
                _report_event(data, label, self.reporter)
            elif mode == "messages":
                chunk, meta = data
                if meta.get("langgraph_node") == "respond" and isinstance(chunk, AIMessageChunk):
                    self.reporter.assistant_token(label, chunk.text)
            elif namespace:
                continue
            elif mode == "updates" and "generate" in data and on_generated is not None:
                await on_generated(data["generate"])
            elif mode == "values":
                output = data
        return output

    async def _save(self, item: RunItem, label: str, record: dict[str, Any]) -> SourceConversation:
        scenario_key = record["metadata"]["scenario_key"]
        with stop_on_write_error(self.plan.conversation_dir, RESUME_HINT):
            path = await save_conversation(
                self.manifest, self.run_id, item, self.plan.conversation_dir, scenario_key, record
            )
        self.summary.written.append(path)
        self.summary.rounds += record["total_rounds"]
        self.reporter.saved(label, str(path), record["total_rounds"])
        await self._replace_if_stalled(record)
        return SourceConversation(
            source=str(path), stem=path.stem, messages=record["conversation"], record=record
        )

    async def _distilled(
        self, item: RunItem, source: SourceConversation, output: dict[str, Any], label: str
    ) -> None:
        """Write the distilled file from the pipeline's output. Notes with no usable chunk
        count as a failure: the file is kept, the item stays to be redone."""
        out_path = distilled_path(self.plan.distilled_dir, source.stem)
        usable = save_distilled(
            source.source,
            out_path,
            output,
            self.ctx,
            self.summary,
            self.reporter,
            RESUME_HINT,
            model=model_name(self.ctx, "distill"),
            label=label,
        )
        await self.saver.adelete_thread(item.conversation_id)
        if usable:
            await self.manifest.set_status(
                self.run_id, item.index, ItemStatus.DISTILLED, distilled_path=out_path
            )

    async def _finish_distilling(self, item: RunItem) -> None:
        """A saved conversation not yet distilled: go on with its pipeline run if one is
        checkpointed, else distill the saved file."""
        config = self._config(item)
        snapshot = await self.graph.aget_state(config)
        path = item.conversation_path
        assert path is not None
        if snapshot.created_at is not None and snapshot.values.get("conversation_record"):
            source = SourceConversation(
                source=str(path),
                stem=path.stem,
                messages=snapshot.values["conversation_record"]["conversation"],
                record=snapshot.values["conversation_record"],
            )
            try:
                output = await self._stream(None, config, str(path), None)
            except Exception as error:
                record_failure(self.summary, self.reporter, str(path), error)
                return
            await self._distilled(item, source, {**snapshot.values, **output}, str(path))
            return
        await self._distill_file(item, path)

    async def _distill_file(self, item: RunItem, path: Path) -> None:
        try:
            source = read_conversations(path)[0]
        except ValueError as error:
            record_failure(self.summary, self.reporter, str(path), error)
            return
        out_path = distilled_path(self.plan.distilled_dir, source.stem)
        usable = await distill_source(
            source,
            out_path,
            self.ctx,
            self.plan.concurrency,
            self.reporter,
            self.summary,
            graph=self.distill_graph,
            thread_id=item.distill_thread,
            retry_hint=RESUME_HINT,
        )
        await self.saver.adelete_thread(item.distill_thread)
        if usable:
            await self.manifest.set_status(
                self.run_id, item.index, ItemStatus.DISTILLED, distilled_path=out_path
            )

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


async def save_conversation(
    manifest: RunManifest,
    run_id: str,
    item: RunItem,
    directory: Path,
    scenario_key: str,
    record: dict[str, Any],
) -> Path:
    """Write the conversation under a new name, recorded before the write so that a crash
    in between cannot lead to a second file of it."""
    data = conversation_file(record)
    while True:
        path = reserve_conversation_path(directory, scenario_key, datetime.now())
        await manifest.set_status(run_id, item.index, ItemStatus.WRITING, conversation_path=path)
        if write_if_free(path, data):
            await manifest.set_status(run_id, item.index, ItemStatus.SAVED)
            return path


def holds(path: Path | None, item: RunItem) -> bool:
    """Whether ``path`` is the saved file of ``item`` (files are written whole or not at all)."""
    if path is None:
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("id") == item.conversation_id


def _report_resumed(values: dict[str, Any], label: str, reporter: Reporter) -> None:
    """Show where a resumed conversation stands."""
    target = values.get("target_rounds")
    if target is None:
        return
    rounds = values.get("rounds", 0)
    reporter.started(label, target)
    reporter.round_done(label, rounds)
    reporter.note(f"{label}: resumed at round {rounds} of {target}")
    messages = values.get("conversation_messages") or []
    if messages and isinstance(messages[-1], HumanMessage):
        reporter.user_message(label, messages[-1].text)


def _report_event(event: dict[str, Any], label: str, reporter: Reporter) -> None:
    """The nodes' progress events (see conversation/state.py and distill/state.py)."""
    kind = event.get("kind")
    if kind == "started":
        reporter.started(label, event["target_rounds"])
    elif kind == "user_message":
        reporter.user_message(label, event["text"])
    elif kind == "round_done":
        reporter.round_done(label, event["rounds"])
    elif kind == "topic_switch":
        reporter.topic_switch(label, event["reason"], event["to_topic"])
    elif kind == "stalled":
        reporter.note(f"{label}: stalled, ended early ({event.get('reason', 'no way out')})")
    elif kind == "chunks":
        reporter.distilling(label, event["chunks"])
    elif kind == "chunk_done":
        reporter.chunk_done(label)
