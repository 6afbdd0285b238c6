"""What every command shares: plain one-line errors and exit codes, writable directories,
prices, and the closing table and line."""

from __future__ import annotations

import gc
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console

from graph_distill.context import SettingError
from graph_distill.conversation.personas import PersonaError
from graph_distill.conversation.scenarios import ScenarioError
from graph_distill.files.writing import ensure_writable_dir
from graph_distill.llm.local_model import LocalModelError
from graph_distill.llm.settings import ConfigError, ModelSettings
from graph_distill.run.ledger import Prices, default_prices, prices_with
from graph_distill.run.manifest import ResumeError
from graph_distill.run.remote import ServerError
from graph_distill.run.settings import RunSettings
from graph_distill.run.summary import FatalRunError, RunSummary

from .terminal import cost_table

EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


# Cycle collection of a run: objects are allocated by the million and almost none is part of a
# cycle, yet Python collects the young generation every 700 of them; at -j 48 that was a
# tenth of the process's CPU.
RUN_GC_THRESHOLDS = (20_000, 20, 20)


def tune_gc_for_runs() -> None:
    """For a local ``run`` or ``distill`` alone: collect cycles far less often in this batch
    process, and never scan again what it loaded to start (the modules, the settings)."""
    gc.freeze()
    gc.set_threshold(*RUN_GC_THRESHOLDS)


def ignore_unawaited_coroutines() -> None:
    """For ``run`` and ``distill`` alone: Ctrl-C leaves the graphs' pending coroutines
    unawaited, and saying so helps no user."""
    warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def plain_errors(interrupted: str = "error: interrupted") -> Iterator[None]:
    """Known failures as one plain line and an exit code, never a traceback."""
    try:
        yield
    except (
        ConfigError,
        LocalModelError,
        ScenarioError,
        PersonaError,
        FatalRunError,
        ResumeError,
        SettingError,
        ServerError,
    ) as error:
        fail(str(error))
    except KeyboardInterrupt:
        click.echo(interrupted, err=True)
        sys.exit(EXIT_INTERRUPTED)


def require_writable(directory: Path, option: str) -> None:
    try:
        ensure_writable_dir(directory)
    except OSError as error:
        fail(f"{option} {directory} cannot be written: {error.strerror or error}")


def prices_for(run: RunSettings, settings: ModelSettings, local: bool) -> Prices:
    return prices_with(
        input=run.price_input,
        cached_input=run.price_cached,
        output=run.price_output,
        defaults=default_prices(settings.base_url, local=local),
    )


def finish(summary: RunSummary, quiet: bool) -> NoReturn:
    if summary.failures:
        click.echo("Failed:", err=True)
        for label, reason in summary.failures:
            click.echo(f"  {label}: {reason}", err=True)
    if summary.not_started:
        click.echo(
            f"{summary.not_started} conversation(s) not started: "
            f"{summary.ledger.budget.message()}. To generate them, run the same command with "
            "--resume (and a larger --budget-tokens)",
            err=True,
        )
    elif summary.unfinished:
        click.echo(
            f"{summary.unfinished} conversation(s) unfinished: "
            "run the same command with --resume to retry them",
            err=True,
        )
    if not quiet:
        Console(stderr=True, highlight=False).print(cost_table(summary.ledger))
        if summary.report_path is not None:
            click.echo(f"Report: {summary.report_path}", err=True)
    if not quiet or summary.failures:
        click.echo(summary.closing_line(), err=True)
    sys.exit(EXIT_FAILURES if summary.failures else 0)
