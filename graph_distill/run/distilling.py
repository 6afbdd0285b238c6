"""Distilling conversations: one saved conversation (``run``), or every record of the files
``distill`` is given, read one at a time and distilled ``-j`` at once into files or JSON Lines."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.runnables import RunnableConfig

from graph_distill.context import DistillContext
from graph_distill.distill.graph import distill_graph
from graph_distill.files.outputs import (
    JsonlOutput,
    OutputMismatch,
    OutputNames,
    record_key,
    setting_differences,
)
from graph_distill.files.readers import (
    BadRecord,
    EmptyRecord,
    InputError,
    ReadOptions,
    Record,
    SourceConversation,
    read_records,
)
from graph_distill.files.streams import ReaderUnavailable, count_records, require_reader
from graph_distill.files.writing import distilled_file, distilled_path, write_json_atomic
from graph_distill.llm.models import model_name
from graph_distill.llm.resources import RunResources, with_resources
from graph_distill.run.ledger import MIMO_V2_FLASH_PRICES, CostLedger, Prices, format_duration
from graph_distill.run.ledger import format_usd as usd
from graph_distill.run.progress import ALREADY_DONE, RecordReporter, Reporter
from graph_distill.run.summary import (
    RETRY_HINT,
    FatalRunError,
    Graph,
    RunSummary,
    cancel_all,
    record_failure,
    reported,
    stop_on_write_error,
)

DEFAULT_OUTPUT_DIR = Path("distilled")


def distill_settings(ctx: DistillContext, model: str | None) -> dict[str, Any]:
    """The settings a distilled record depends on, recorded in its metadata (a re-run
    compares them); ``model`` the distill model's name, None when unknown (a server's own)."""
    return {
        "model": model,
        "split_method": ctx.split_method,
        "max_tokens": ctx.max_tokens,
        "overlap_tokens": ctx.token_overlap(),
        "max_turns": ctx.max_turns,
        "overlap_turns": ctx.turn_overlap(),
    }


def distilled_data(
    source: Any, result: Mapping[str, Any], ctx: DistillContext, model: str | None
) -> dict[str, Any]:
    """The distilled record of a distill graph's ``result``."""
    return distilled_file(
        source=source,
        distilled_chunks=result["distilled_chunks"],
        final_summary=result["final_summary"],
        final_notes=result.get("final_notes"),
        metadata={**distill_settings(ctx, model), "usage": result["distill_usage"]},
    )


def has_notes(data: Mapping[str, Any]) -> bool:
    """Whether some chunk of a distilled record got notes (else it is to be redone)."""
    chunks = data.get("distilled_chunks") or []
    return not chunks or any(chunk.get("status") != "raw" for chunk in chunks)


def count_distilled(
    data: Mapping[str, Any], where: str, name: str, summary: RunSummary, reporter: Reporter
) -> bool:
    """Count a written record; True when it has notes. One whose every chunk was kept raw is
    written too (its summary comes from the raw text) but counts as a failure, so that the
    next run redoes it."""
    raw = sum(chunk.get("status") == "raw" for chunk in data.get("distilled_chunks") or [])
    summary.raw_chunks += raw
    if not has_notes(data):
        reason = f"no chunk got usable notes ({raw} kept raw); written to {where}, redone next time"
        summary.failures.append((name, reason))
        reporter.failed(name, reason)
        return False
    summary.distilled += 1
    reporter.distilled(name, where)
    return True


def save_distilled(
    source: Any,
    out_path: Path,
    result: Mapping[str, Any],
    ctx: DistillContext,
    summary: RunSummary,
    reporter: Reporter,
    hint: str,
    *,
    model: str | None,
    label: str | None = None,
) -> bool:
    """Write a distill graph's ``result`` to ``out_path``; True when it has notes."""
    data = distilled_data(source, result, ctx, model)
    name = label or (source if isinstance(source, str) else str(out_path))
    return write_distilled(data, out_path, name, summary, reporter, hint)


def write_distilled(
    data: Mapping[str, Any],
    out_path: Path,
    name: str,
    summary: RunSummary,
    reporter: Reporter,
    hint: str,
) -> bool:
    """Write a distilled record to its own file and count it; True when it has notes."""
    with stop_on_write_error(out_path.parent, hint):
        write_json_atomic(out_path, data)
    return count_distilled(data, str(out_path), name, summary, reporter)


async def distill_result(
    messages: Sequence[Mapping[str, Any]],
    ctx: DistillContext,
    summary: RunSummary,
    *,
    graph: Graph = distill_graph,
    thread_id: str | None = None,
) -> dict[str, Any]:
    """The distill graph's output for one conversation's ``messages`` (failures raised). With
    a ``thread_id`` (and a ``graph`` compiled with a checkpointer) a distillation cut short
    goes on where it stopped: chunks already distilled are not asked again."""
    config: RunnableConfig = {"callbacks": [summary.ledger.callback("distillation")]}
    if thread_id is not None:
        config["configurable"] = {"thread_id": thread_id}
    config = with_resources(config, summary.resources)
    inputs: dict[str, Any] | None = {"conversation": list(messages)}
    if thread_id is not None and (await graph.aget_state(config)).created_at is not None:
        inputs = None
    return await graph.ainvoke(inputs, config, context=ctx)


async def distill_record(
    source: SourceConversation,
    ctx: DistillContext,
    reporter: Reporter,
    summary: RunSummary,
    *,
    graph: Graph = distill_graph,
    thread_id: str | None = None,
) -> dict[str, Any] | None:
    """The distilled record of one conversation (see distill_result); None when it failed
    (recorded, not raised)."""
    try:
        result = await distill_result(
            source.messages, ctx, summary, graph=graph, thread_id=thread_id
        )
    except Exception as error:
        record_failure(summary, reporter, source.source, error)
        return None
    return distilled_data(source.source_value, result, ctx, model_name(ctx, "distill"))


JSONL, DIRECTORY, FILE = "jsonl", "directory", "file"


class TargetMismatch(ValueError):
    """``-o`` names one file but the inputs hold several records (one plain line)."""


@dataclass(frozen=True)
class DistillTarget:
    """Where ``distill`` writes: a JSON Lines file (``-o x.jsonl``), a directory (``-o`` an
    existing directory or ending in ``/``; with ``-b``, any ``-o`` without a suffix), or the one
    file ``-o`` names (for exactly one record). Without ``-o``: ``./distilled``, a record that is
    its file's only one named after the file. Nothing else is read or written."""

    output: Path | None
    kind: str

    @classmethod
    def of(cls, output: str | None, batch: bool) -> DistillTarget:
        if output is None:
            return cls(None, DIRECTORY)
        path = Path(output)
        if path.suffix.lower() == ".jsonl":
            return cls(path, JSONL)
        if output.endswith(("/", os.sep)) or path.is_dir() or (batch and not path.suffix):
            return cls(path, DIRECTORY)
        return cls(path, FILE)

    @property
    def jsonl(self) -> bool:
        return self.kind == JSONL

    @property
    def single_file(self) -> bool:
        return self.kind == FILE

    @property
    def directory(self) -> Path:
        return self.output if self.kind == DIRECTORY and self.output else DEFAULT_OUTPUT_DIR

    @property
    def report_dir(self) -> Path:
        """Where ``run_report.json`` goes: beside the output file, or in the directory."""
        if self.output is not None and self.kind != DIRECTORY:
            return self.output.parent
        return self.directory

    def check_fits(self, inputs: Sequence[Path], options: ReadOptions) -> None:
        """TargetMismatch when ``-o`` names one file and ``inputs`` hold several records to
        distill (counted only then, before any model call)."""
        if not self.single_file:
            return
        assert self.output is not None
        records = (
            record
            for path in inputs
            for record in _readable(path, options)
            if isinstance(record, SourceConversation)
        )
        if next(records, None) is None or next(records, None) is None:
            return
        count = 2 + sum(1 for _ in records)
        raise TargetMismatch(
            f"-o {self.output}: {count:,} records to distill do not fit in one file; give a "
            f".jsonl file (-o {self.output.with_suffix('.jsonl')}) or a directory "
            f"(-o {self.output.with_suffix('')}/)"
        )


def _readable(path: Path, options: ReadOptions) -> Iterator[Record]:
    try:
        yield from read_records(path, options)
    except InputError:
        return


@dataclass
class DistillSummary(RunSummary):
    empty: int = 0
    redone: int = 0

    def closing_line(self) -> str:
        total = self.ledger.total()
        redone = f" ({self.redone} redone: made with other settings)" if self.redone else ""
        return (
            f"{self.distilled:,} record(s) distilled{redone}, "
            f"{self.skipped:,} skipped ({ALREADY_DONE}), {self.empty:,} skipped (empty), "
            f"{len(self.failures):,} failed; {total.usage['calls']:,} model calls, "
            f"est. {usd(total.cost_usd)}; {format_duration(total.wall_seconds or 0.0)}"
        )


# Who distills a record: its distilled data, or None when that failed (recorded, not raised).
Producer = Callable[[SourceConversation, RunSummary, Reporter], Awaitable[dict[str, Any] | None]]


def local_producer(ctx: DistillContext) -> Producer:
    """Records distilled by the distill graph in this process."""

    async def produce(
        record: SourceConversation, summary: RunSummary, reporter: Reporter
    ) -> dict[str, Any] | None:
        return await distill_record(record, ctx, reporter, summary)

    return produce


class _Job:
    """What ``distill`` does with each record; it holds only the records being worked on."""

    def __init__(
        self,
        target: DistillTarget,
        settings: dict[str, Any],
        produce: Producer,
        force: bool,
        reporter: RecordReporter,
        summary: DistillSummary,
    ) -> None:
        self.target, self.produce, self.force = target, produce, force
        self.reporter, self.summary = reporter, summary
        self.settings = settings
        self.names = OutputNames(target.directory)
        self.sink: JsonlOutput | None = None
        if target.jsonl and target.output is not None:
            try:
                self.sink = JsonlOutput(target.output, self.settings, force=force)
            except OutputMismatch as error:
                raise FatalRunError(str(error)) from None
            if self.sink.repaired:
                reporter.note(f"{target.output}: dropped an unfinished last line")

    def work(self, record: SourceConversation | EmptyRecord | BadRecord) -> Coroutine | None:
        """The distillation to run for ``record``, or None when it is settled now."""
        if isinstance(record, BadRecord):
            self.summary.failures.append((record.source, record.problem))
            self.reporter.failed(record.source, record.problem)
            return None
        if isinstance(record, EmptyRecord):
            self.summary.empty += 1
            self.reporter.skipped(record.source, record.problem)
            return None
        if self.sink is not None:
            if self.sink.holds(record.source_value):
                return self._skip(record)
            return self._to_jsonl(record, self.sink)
        out_path = self._out_path(record)
        found = None if self.force else _distilled_at(out_path)
        if found is not None and not _same_record(found.get("source"), record.source_value):
            problem = (
                f"{out_path} holds the notes of another record ({found.get('source')}): give "
                "another -o, or --force to replace it"
            )
            self.summary.failures.append((record.source, problem))
            self.reporter.failed(record.source, problem)
            return None
        if found is not None and self._made_alike(out_path, found):
            return self._skip(record)
        return self._to_file(record, out_path)

    def _skip(self, record: SourceConversation) -> None:
        self.summary.skipped += 1
        self.reporter.skipped(record.source, ALREADY_DONE)

    def _out_path(self, record: SourceConversation) -> Path:
        if self.target.single_file and self.target.output is not None:
            return self.target.output
        if record.whole_file and record.origin is None:
            return distilled_path(self.target.directory, record.stem)
        return self.names.claim(record.stem, record.origin)

    def _made_alike(self, out_path: Path, data: Mapping[str, Any]) -> bool:
        """Whether ``data``, the record's file, holds notes made with these settings (else:
        redo it)."""
        found = data.get("metadata")
        if not isinstance(found, dict) or not has_notes(data):
            return False
        differences = setting_differences(found, self.settings)
        if differences:
            self.summary.redone += 1
            self.reporter.note(f"redoing {out_path}: made with other settings ({differences[0]})")
        return not differences

    async def _to_file(self, record: SourceConversation, out_path: Path) -> None:
        data = await self.produce(record, self.summary, self.reporter)
        if data is not None:
            write_distilled(data, out_path, record.source, self.summary, self.reporter, RETRY_HINT)

    async def _to_jsonl(self, record: SourceConversation, sink: JsonlOutput) -> None:
        data = await self.produce(record, self.summary, self.reporter)
        if data is None:
            return
        if has_notes(data):  # a record with no notes stays out, so that a re-run redoes it
            with stop_on_write_error(sink.path.parent, RETRY_HINT):
                sink.append(data)
        count_distilled(data, str(sink.path), record.source, self.summary, self.reporter)

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()


def _distilled_at(path: Path) -> dict[str, Any] | None:
    """The distilled record in ``path``; None when there is none (or not one to trust)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "source" in data else None


def _same_record(found: Any, source: str | Mapping[str, Any]) -> bool:
    try:
        return record_key(found) == record_key(source)
    except (KeyError, TypeError, ValueError):
        return False


def _records(
    inputs: Sequence[Path], options: ReadOptions, job: _Job
) -> Iterator[SourceConversation | EmptyRecord | BadRecord]:
    for path in inputs:
        try:
            yield from read_records(path, options)
        except InputError as error:
            job.summary.failures.append((error.path, error.problem))
            job.reporter.failed(error.path, error.problem)


async def _pump(works: Iterator[Coroutine | None], concurrency: int) -> None:
    """Run the works ``concurrency`` at once, pulling the next only when one ends."""
    pending: set[asyncio.Future[Any]] = set()
    try:
        for work in works:
            if work is None:
                continue
            while len(pending) >= concurrency:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    task.result()
            pending.add(asyncio.ensure_future(work))
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
    finally:
        await cancel_all(list(pending))


def _total(inputs: Sequence[Path]) -> int | None:
    counts = [count_records(path) for path in inputs]
    return None if None in counts else sum(c for c in counts if c is not None)


async def distill_inputs(
    inputs: Sequence[Path],
    target: DistillTarget,
    ctx: DistillContext,
    *,
    concurrency: int,
    force: bool,
    reporter: RecordReporter,
    read_options: ReadOptions | None = None,
    prices: Prices = MIMO_V2_FLASH_PRICES,
    produce: Producer | None = None,
    model: str | None = None,
    report_settings: Mapping[str, Any] | None = None,
) -> DistillSummary:
    """Distill every record of ``inputs``, ``concurrency`` at once, with at most about that
    many records in memory (by ``produce``, default the distill graph here, made with
    ``model``); calls, tokens and cost go to ``run_report.json`` in the target's report
    directory. FatalRunError (one line) when the work cannot start."""
    for path in inputs:
        try:
            require_reader(path)
        except ReaderUnavailable as error:
            raise FatalRunError(str(error)) from None
    summary = DistillSummary(
        ledger=CostLedger(prices),
        resources=RunResources(
            ctx.requests_per_minute, aiohttp=True, stock=ctx.stock, distill_limit=concurrency
        ),
    )
    if produce is None:
        produce, model = local_producer(ctx), model_name(ctx, "distill")
    job = _Job(target, distill_settings(ctx, model), produce, force, reporter, summary)
    reporter.begin(_total(inputs))
    settings: Mapping[str, Any] = {
        "inputs": [str(Path(path).absolute()) for path in inputs],
        "output": str(target.output) if target.output else str(target.directory),
        "concurrency": concurrency,
        "force": force,
        **(report_settings or {}),
    }
    works = (job.work(record) for record in _records(inputs, read_options or ReadOptions(), job))
    try:
        with reported(summary, target.report_dir, ctx, dict(settings), RETRY_HINT):
            async with summary.resources:
                await _pump(works, concurrency)
    finally:
        job.close()
    return summary
