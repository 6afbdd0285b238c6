"""What a run did: files written, failures, usage and cost; its report, written also when the
run is cut short."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from langgraph.graph.state import CompiledStateGraph

from graph_distill.context import ModelContext
from graph_distill.files.writing import RUN_REPORT_NAME, write_json_atomic
from graph_distill.llm.models import describe_error
from graph_distill.llm.resources import RunResources
from graph_distill.run.ledger import (
    CostLedger,
    format_duration,
    format_usd,
    run_report,
)
from graph_distill.run.progress import Reporter

Graph = CompiledStateGraph[Any, Any, Any, Any]


class FatalRunError(RuntimeError):
    """A failure that dooms every item (the key was refused): the run stops at once."""


@dataclass
class RunSummary:
    written: list[Path] = field(default_factory=list)
    # Distilled records written, and records skipped as already distilled (counts: a
    # ``distill`` of 100k records keeps no list).
    distilled: int = 0
    skipped: int = 0
    # Chunks whose notes could not be had (every structured-output level failed).
    raw_chunks: int = 0
    # Conversations that ended stalled, and replacements started for them.
    stalled: int = 0
    replaced: int = 0
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
    # The run's HTTP client, models, request throttle and structured-output levels.
    resources: RunResources = field(default_factory=RunResources)

    def closing_line(self) -> str:
        total = self.ledger.total()
        parts = [
            f"{len(self.kept)} kept from before" if self.kept else "",
            f"{len(self.written)} conversation file(s) written ({self.rounds} rounds)"
            if self.written or not self.distilled
            else "",
            f"{self.distilled} distilled file(s)" if self.distilled or self.written else "",
            f"{self.skipped} skipped (already distilled)" if self.skipped else "",
            f"{self.raw_chunks} chunk(s) kept raw" if self.raw_chunks else "",
            f"{self.stalled} stalled" + (f" ({self.replaced} replaced)" if self.replaced else "")
            if self.stalled
            else "",
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
        path = Path(directory) / RUN_REPORT_NAME
        # The path that ran: the stock one also when the fast path's check failed.
        ran = {**settings, "stock": self.resources.stock}
        report = run_report(self, context, throttle=self.resources.stats(), settings=ran)
        write_json_atomic(path, report)
        self.report_path = path


RESUME_HINT = "run the same command with --resume"


RETRY_HINT = "run the same command again"


@contextmanager
def stop_on_write_error(directory: Path, hint: str) -> Iterator[None]:
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
def reported(
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
    with stop_on_write_error(directory, hint):
        summary.write_report(directory, context, settings)


async def cancel_all(tasks: Sequence[asyncio.Future[Any]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def record_failure(summary: RunSummary, reporter: Reporter, label: str, error: Exception) -> None:
    if isinstance(error, openai.AuthenticationError):
        raise FatalRunError(describe_error(error)) from error
    reason = describe_error(error)
    summary.failures.append((label, reason))
    reporter.failed(label, reason)
