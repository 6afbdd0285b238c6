"""The one driver of ``run``'s items, here or on an Agent Server: each item's seed, scenario and
inputs, the token-budget gate, the file of a conversation saved whole exactly once (also after
a crash between naming and writing it), its distilled file, replacements of stalled ones, and
the counts of what was saved. How an item's graph is executed is the ``Executor``'s part (in
this process: run/generation.py; on a server: run/remote.py)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from langgraph.checkpoint.base import BaseCheckpointSaver

from graph_distill.context import PipelineContext
from graph_distill.conversation.personas import Persona, pick_persona
from graph_distill.conversation.scenarios import Scenario, pick_scenario
from graph_distill.files.writing import (
    conversation_file,
    distilled_path,
    reserve_conversation_path,
    write_if_free,
)
from graph_distill.run.checkpoints import open_checkpointer
from graph_distill.run.distilling import save_distilled
from graph_distill.run.ledger import MIMO_V2_FLASH_PRICES, Prices
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
from graph_distill.run.summary import RESUME_HINT, RunSummary, cancel_all, stop_on_write_error


@dataclass(kw_only=True)
class RunPlan:
    count: int
    conversation_dir: Path
    distilled_dir: Path
    scenarios: Sequence[Scenario]
    seed: int
    # The user personas conversations draw from (empty: the graph draws from its settings).
    personas: Sequence[Persona] = ()
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

    @property
    def done(self) -> ItemStatus:
        """The status at which an item of this run is finished."""
        return ItemStatus.DISTILLED if self.distill else ItemStatus.SAVED


@dataclass(frozen=True)
class ItemWork:
    """What one item is run with: its label in progress lines and its graph's inputs."""

    item: RunItem
    label: str
    inputs: dict[str, Any]


# Called by an executor with graph values as soon as they hold the conversation record.
OnGenerated = Callable[[Mapping[str, Any]], Awaitable[None]]


class Executor(Protocol):
    """How an item's graph is executed. Failures are raised; ``failed`` records them."""

    # The settings distilled files record, and the distill model's name (None: unknown here).
    ctx: PipelineContext
    distill_model: str | None

    async def generate(self, work: ItemWork, generated: OnGenerated) -> Mapping[str, Any]:
        """Run the item's graph (or go on with it); ``generated`` as soon as the conversation
        record is there; the graph's final values."""
        ...

    async def distill_saved(self, work: ItemWork, path: Path) -> Mapping[str, Any]:
        """The distill output of the item's saved conversation ``path``."""
        ...

    async def release(self, item: RunItem) -> None:
        """Drop what the item's runs left behind once its files are written."""
        ...

    def failed(self, summary: RunSummary, label: str, error: Exception) -> None:
        """Record an item's failure (or raise ``error`` again when it is not one)."""
        ...


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


def item_work(plan: RunPlan, item: RunItem) -> ItemWork:
    """Seed -> scenario -> inputs of one item."""
    seed = conversation_seed(plan.seed, item.index)
    scenario = pick_scenario(plan.scenarios, random.Random(seed))
    inputs = {
        "scenario": scenario.to_record(),
        "scenario_key": scenario.key,
        "seed": seed,
        "conversation_id": item.conversation_id,
    }
    if plan.personas:
        inputs["persona"] = pick_persona(plan.personas, seed)
    return ItemWork(item=item, label=f"#{item.index + 1} {scenario.key}", inputs=inputs)


@asynccontextmanager
async def open_run(
    plan: RunPlan, *, stock: bool = False
) -> AsyncIterator[tuple[str, BaseCheckpointSaver, RunManifest]]:
    """The run of ``plan`` held by this process and recorded in the conversation directory:
    a new one, or ``plan.run_id`` (ResumeError when the directory has no such run); its
    checkpointer is the stock one when ``stock``."""
    # A new run is held before it is recorded: a concurrent --resume never sees it unheld.
    run_id = plan.run_id or new_run_id()
    async with (
        hold_run(plan.conversation_dir, run_id),
        open_manifest(plan.conversation_dir) as manifest,
        open_checkpointer(db_path(plan.conversation_dir), stock=stock) as saver,
    ):
        if plan.run_id is None:
            await manifest.create(plan.resume_settings, plan.count, run_id)
        else:
            await manifest.get(run_id)
        yield run_id, saver, manifest


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


class Driver:
    """One run's items: each generated, saved and distilled once, each step recorded."""

    def __init__(
        self,
        plan: RunPlan,
        executor: Executor,
        manifest: RunManifest,
        summary: RunSummary,
        reporter: Reporter,
    ) -> None:
        assert summary.run_id is not None
        self.plan = plan
        self.executor = executor
        self.manifest = manifest
        self.run_id = summary.run_id
        self.summary = summary
        self.reporter = reporter
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
        await self._close_if_complete()

    async def _item(self, item: RunItem) -> None:
        if item.status is ItemStatus.WRITING and holds(item.conversation_path, item):
            await self.manifest.set_status(self.run_id, item.index, ItemStatus.SAVED)
            item = replace(item, status=ItemStatus.SAVED)
        work = item_work(self.plan, item)
        if item.status in (ItemStatus.SAVED, ItemStatus.DISTILLED):
            assert item.conversation_path is not None
            self.summary.kept.append(item.conversation_path)
            if item.status is not self.plan.done:
                await self._finish_distilling(work, item.conversation_path)
            return
        await self.gate.enter(item.index)
        try:
            if self.summary.ledger.budget.exhausted:
                self._not_started()
                return
            await self._generate(work)
        finally:
            self.gate.leave(item.index)

    def _not_started(self) -> None:
        if not self.summary.not_started:
            budget = self.summary.ledger.budget
            self.reporter.note(
                f"{budget.message()}: no new conversation starts, running ones finish"
            )
        self.summary.not_started += 1

    async def _generate(self, work: ItemWork) -> None:
        """Generate (and distill) one conversation, or go on with it."""
        item = work.item
        if item.status is ItemStatus.PENDING:
            await self.manifest.set_status(self.run_id, item.index, ItemStatus.GENERATING)
        saved: list[Path] = []

        async def generated(values: Mapping[str, Any]) -> None:
            if saved or not values.get("conversation_record"):
                return
            saved.append(await self._save(work, values["conversation_record"]))
            self.gate.leave(item.index)

        try:
            output = await self.executor.generate(work, generated)
        except Exception as error:
            self.executor.failed(self.summary, work.label, error)
            return
        await generated(output)
        if not saved:
            return
        if self.plan.distill:
            await self._write_distilled(work, saved[0], output)
        await self.executor.release(item)

    async def _finish_distilling(self, work: ItemWork, path: Path) -> None:
        """A saved conversation not yet distilled."""
        try:
            output = await self.executor.distill_saved(work, path)
        except Exception as error:
            self.executor.failed(self.summary, work.label, error)
            return
        await self._write_distilled(work, path, output)
        await self.executor.release(work.item)

    async def _save(self, work: ItemWork, record: Mapping[str, Any]) -> Path:
        with stop_on_write_error(self.plan.conversation_dir, RESUME_HINT):
            path = await save_conversation(
                self.manifest, self.run_id, work.item, self.plan.conversation_dir, record
            )
        self.summary.written.append(path)
        self.summary.rounds += record["total_rounds"]
        self.reporter.saved(work.label, str(path), record["total_rounds"])
        await self._replace_if_stalled(record)
        return path

    async def _replace_if_stalled(self, record: Mapping[str, Any]) -> None:
        if record["metadata"].get("termination_reason") != "stalled":
            return
        self.summary.stalled += 1
        if self.plan.replace_stalled and self.summary.replaced < self.plan.count:
            self.summary.replaced += 1
            item = await self.manifest.add_item(self.run_id)
            self.tasks.append(asyncio.ensure_future(self._item(item)))

    async def _write_distilled(self, work: ItemWork, path: Path, output: Mapping[str, Any]) -> None:
        """Write the distilled file of the conversation ``path``. Notes with no usable chunk
        count as a failure: the file is kept, the item stays to be redone."""
        out_path = distilled_path(self.plan.distilled_dir, path.stem)
        usable = save_distilled(
            str(path),
            out_path,
            output,
            self.executor.ctx,
            self.summary,
            self.reporter,
            RESUME_HINT,
            model=self.executor.distill_model,
            label=work.label,
        )
        if usable:
            await self.manifest.set_status(
                self.run_id, work.item.index, ItemStatus.DISTILLED, distilled_path=out_path
            )

    async def _close_if_complete(self) -> None:
        """Once every conversation is done, release what its runs left and mark the run
        complete."""
        items = await self.manifest.items(self.run_id)
        self.summary.unfinished = sum(item.status is not self.plan.done for item in items)
        if self.summary.unfinished:
            return
        for item in items:
            await self.executor.release(item)
        await self.manifest.mark_complete(self.run_id)


async def save_conversation(
    manifest: RunManifest,
    run_id: str,
    item: RunItem,
    directory: Path,
    record: Mapping[str, Any],
) -> Path:
    """Write the conversation under a new name, recorded before the write so that a crash
    in between cannot lead to a second file of it."""
    data = conversation_file(record)
    scenario_key = record["metadata"]["scenario_key"]
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
