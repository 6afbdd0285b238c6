"""What a run shows on the terminal: progress bars with rate and ETA and the live text of one
conversation above them (rich); plain lines when the output is not a terminal; nothing with
``-q``. Also the end-of-run cost table."""

from __future__ import annotations

from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from graph_distill.run.ledger import CostLedger, format_duration, format_usd
from graph_distill.run.progress import ALREADY_DONE, RecordReporter, Reporter

LIVE_TEXT_LINES = 14


class LineReporter(Reporter):
    """One plain line per finished item; for output that is not a terminal."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)

    def _line(self, text: str) -> None:
        self.console.print(text, markup=False)

    def saved(self, label: str, path: str, rounds: int) -> None:
        self._line(f"saved {path} ({rounds} rounds)")

    def distilled(self, label: str, path: str) -> None:
        self._line(f"distilled {path}")

    def failed(self, label: str, reason: str) -> None:
        self._line(f"FAILED {label}: {reason}")

    def note(self, text: str) -> None:
        self._line(text)


class RateColumn(ProgressColumn):
    """Items per second (or per minute when slower), from rich's speed estimate."""

    def __init__(self, unit: str = "") -> None:
        super().__init__()
        self.unit = f" {unit}" if unit else ""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("", style="progress.data.speed")
        per = f"{speed:,.1f}{self.unit}/s" if speed >= 1 else f"{speed * 60:.1f}{self.unit}/min"
        return Text(per, style="progress.data.speed")


class LiveReporter(LineReporter):
    """Progress bars (all conversations, each running conversation's rounds, each
    distillation's chunks) under the text of one conversation as it is written."""

    shows_tokens = True

    def __init__(self, total: int, what: str = "conversations", console: Console | None = None):
        super().__init__(console or Console(stderr=True))
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.overall = self.progress.add_task(what, total=total)
        self.tasks: dict[str, TaskID] = {}
        self.chunk_tasks: dict[str, TaskID] = {}
        self.shown: str | None = None
        self.text: deque[str] = deque(maxlen=LIVE_TEXT_LINES)
        self.reply: str | None = None
        self.live = Live(self._view(), console=self.console, refresh_per_second=8)
        self.live.start()

    def _view(self) -> Group:
        if self.shown is None:
            return Group(self.progress)
        lines = list(self.text)
        if self.reply is not None:
            lines += f"[assistant] {self.reply}".splitlines()
        header = Text(f"── {self.shown} ──", style="bold")
        return Group(header, Text("\n".join(lines[-LIVE_TEXT_LINES:])), self.progress)

    def _refresh(self, now: bool = False) -> None:
        """Redraw: at once for a whole message, at the next tick for a token."""
        self.live.update(self._view(), refresh=now)

    def _watch(self, label: str) -> bool:
        """Whether ``label`` is the conversation whose text is shown (the first to start
        while none is shown)."""
        if self.shown is None:
            self.shown = label
            self.text.clear()
        return self.shown == label

    def _say(self, label: str, line: str | None) -> None:
        if self._watch(label):
            if self.reply is not None:
                self.text.extend(f"[assistant] {self.reply}".splitlines())
                self.reply = None
            if line is not None:
                self.text.extend(line.splitlines() or [""])
            self._refresh(now=True)

    def started(self, label: str, target_rounds: int) -> None:
        self.tasks[label] = self.progress.add_task(f"  {label}", total=target_rounds)
        self._say(label, f"{label}: {target_rounds} rounds")

    def round_done(self, label: str, rounds: int) -> None:
        if label in self.tasks:
            self.progress.update(self.tasks[label], completed=rounds)
        if self.shown == label:
            self._say(label, None)

    def user_message(self, label: str, text: str) -> None:
        self._say(label, f"[user] {text}")

    def assistant_token(self, label: str, text: str) -> None:
        if self.shown == label:
            self.reply = (self.reply or "") + text
            self._refresh()

    def topic_switch(self, label: str, reason: str, topic: str) -> None:
        self._say(label, f"--- topic switch ({reason}): {topic}")

    def saved(self, label: str, path: str, rounds: int) -> None:
        self._drop(label)
        self.progress.advance(self.overall)
        super().saved(label, path, rounds)

    def distilling(self, label: str, chunks: int) -> None:
        self.chunk_tasks[label] = self.progress.add_task(f"  distill {label}", total=chunks)

    def chunk_done(self, label: str) -> None:
        if label in self.chunk_tasks:
            self.progress.advance(self.chunk_tasks[label])

    def distilled(self, label: str, path: str) -> None:
        task = self.chunk_tasks.pop(label, None)
        if task is not None:
            self.progress.remove_task(task)
        super().distilled(label, path)

    def failed(self, label: str, reason: str) -> None:
        self._drop(label)
        task = self.chunk_tasks.pop(label, None)
        if task is not None:
            self.progress.remove_task(task)
        super().failed(label, reason)

    def _drop(self, label: str) -> None:
        task = self.tasks.pop(label, None)
        if task is not None:
            self.progress.remove_task(task)
        if self.shown == label:
            self.shown, self.reply = None, None
            self.text.clear()
            self._refresh()

    def close(self) -> None:
        self.live.stop()


def choose_reporter(*, quiet: bool, tty: bool, total: int, what: str = "conversations") -> Reporter:
    """Bars and live text on a terminal, plain lines elsewhere, nothing with ``-q``."""
    if quiet:
        return Reporter()
    return LiveReporter(total, what) if tty else LineReporter()


class RecordLines(LineReporter, RecordReporter):
    """One line per distilled, failed or empty record; records already done pass silently."""

    def distilled(self, label: str, path: str) -> None:
        self._line(f"distilled {label} -> {path}")

    def skipped(self, label: str, reason: str) -> None:
        if reason != ALREADY_DONE:
            self._line(f"skipped {label}: {reason}")


class RecordBar(RecordReporter):
    """A bar of records done (rate, time left) redrawn in place; failures and notes are
    printed above it."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("distilling"),
            BarColumn(),
            MofNCompleteColumn(),
            RateColumn("records"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.task = self.progress.add_task("records", total=None)
        self.progress.start()

    def begin(self, total: int | None) -> None:
        self.progress.update(self.task, total=total)

    def distilled(self, label: str, path: str) -> None:
        self.progress.advance(self.task)

    def skipped(self, label: str, reason: str) -> None:
        self.progress.advance(self.task)

    def failed(self, label: str, reason: str) -> None:
        self.console.print(f"FAILED {label}: {reason}", markup=False, highlight=False)
        self.progress.advance(self.task)

    def note(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def close(self) -> None:
        self.progress.stop()


def choose_record_reporter(*, quiet: bool, tty: bool) -> RecordReporter:
    """``distill``'s bar on a terminal, plain lines elsewhere, nothing with ``-q``."""
    if quiet:
        return RecordReporter()
    return RecordBar() if tty else RecordLines()


def cost_table(ledger: CostLedger) -> Table:
    """The closing table: one row per phase and the total, with the prices under it."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("")
    for name in ("calls", "input tokens", "cached", "output tokens", "est. cost", "wall time"):
        table.add_column(name, justify="right")
    for row in ledger.rows():
        usage = row.usage
        table.add_row(
            row.phase,
            f"{usage['calls']:,}",
            f"{usage['input_tokens']:,}",
            f"{usage['cached_tokens']:,}",
            f"{usage['output_tokens']:,}",
            format_usd(row.cost_usd),
            "-" if row.wall_seconds is None else format_duration(row.wall_seconds),
        )
    p = ledger.prices
    table.caption = (
        f"Prices, USD per 1M tokens: input {p.input:g}, cached input {p.cached_input:g}, "
        f"output {p.output:g} ({p.source})."
    )
    table.caption_justify = "left"
    return table
