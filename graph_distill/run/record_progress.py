"""What ``distill`` shows while it works through records: a progress bar on a terminal (records
done, rate, time left), plain lines otherwise, nothing with ``-q``."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from graph_distill.run.progress import LineReporter, Reporter


class RecordReporter(Reporter):
    """Silent (``-q``); the others override what they show."""

    def begin(self, total: int | None) -> None: ...

    def skipped(self, label: str, reason: str) -> None: ...


class RecordLines(LineReporter, RecordReporter):
    """One line per distilled, failed or empty record; records already done pass silently."""

    def distilled(self, label: str, path: str) -> None:
        self._line(f"distilled {label} -> {path}")

    def skipped(self, label: str, reason: str) -> None:
        if reason != ALREADY_DONE:
            self._line(f"skipped {label}: {reason}")


ALREADY_DONE = "already distilled"


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed or 0:,.1f} records/s")


class RecordBar(RecordReporter):
    """A bar redrawn in place; failures and notes are printed above it."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(file=sys.stderr)
        self.progress = Progress(
            TextColumn("distilling"),
            BarColumn(),
            MofNCompleteColumn(),
            _RateColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("records", total=None)
        self.progress.start()

    def begin(self, total: int | None) -> None:
        self.progress.update(self.task, total=total)

    def _advance(self) -> None:
        self.progress.advance(self.task)

    def distilled(self, label: str, path: str) -> None:
        self._advance()

    def skipped(self, label: str, reason: str) -> None:
        self._advance()

    def failed(self, label: str, reason: str) -> None:
        self.console.print(f"FAILED {label}: {reason}", markup=False, highlight=False)
        self._advance()

    def note(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self.progress.stop()


def choose_record_reporter(*, quiet: bool, tty: bool) -> RecordReporter:
    if quiet:
        return RecordReporter()
    return RecordBar() if tty else RecordLines()
