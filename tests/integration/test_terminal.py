"""What a run shows: bars and the live text of one conversation on a terminal, plain lines
elsewhere, nothing with -q; all from the nodes' progress events."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
from pathlib import Path

from rich.console import Console

from graph_distill.cli.terminal import LineReporter, LiveReporter, choose_reporter
from graph_distill.context import PipelineContext
from graph_distill.conversation.scenarios import builtin_scenarios
from graph_distill.run.driver import RunPlan
from graph_distill.run.generation import run_conversations
from graph_distill.run.progress import Reporter
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.roles import RoleResponder


def run(
    reporter: Reporter, tmp_path: Path, count: int, typo_rate: float = 0.0, distill: bool = False
) -> list[dict]:
    with FakeOpenAIServer(RoleResponder()) as server:
        ctx = PipelineContext(
            base_url=server.base_url,
            api_key="k",
            model="m",
            min_rounds=3,
            max_rounds=3,
            typo_rate=typo_rate,
        )
        plan = RunPlan(
            count=count,
            conversation_dir=tmp_path,
            distilled_dir=tmp_path / "d",
            scenarios=builtin_scenarios()[:1],
            seed=5,
            concurrency=count,
            distill=distill,
        )
        try:
            summary = asyncio.run(run_conversations(plan, ctx, reporter))
        finally:
            reporter.close()
    assert not summary.failures
    return [json.loads(p.read_text()) for p in summary.written]


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=500, record=True)


def test_live_text_shows_the_conversation_as_saved(tmp_path: Path) -> None:
    console = terminal()
    [record] = run(LiveReporter(1, console=console), tmp_path, count=1, typo_rate=1.0)
    shown = console.export_text()
    for message in record["conversation"]:
        # what is shown is what is saved: the user's text after noise, the assistant's reply
        assert message["content"] in shown
    assert "[user]" in shown and "[assistant]" in shown
    assert "saved " in shown and "conversations" in shown


def test_with_several_at_once_one_conversation_is_streamed_above_the_bars(
    tmp_path: Path,
) -> None:
    console = terminal()
    reporter = LiveReporter(3, console=console)
    followed: list[str] = []
    original = reporter._say

    def spy(label: str, line: str) -> None:
        original(label, line)
        if reporter.shown is not None:
            followed.append(reporter.shown)

    reporter._say = spy  # type: ignore[method-assign]
    records = run(reporter, tmp_path, count=3, distill=True)
    shown = console.export_text()
    assert len(records) == 3
    assert "3/3" in shown and "distill #" in shown
    # one conversation at a time is followed, until it ends
    switches = sum(1 for a, b in itertools.pairwise(followed) if a != b)
    assert followed and switches <= 2


def test_line_reporter_prints_one_line_per_file(tmp_path: Path) -> None:
    console = Console(file=io.StringIO(), width=300)
    run(LineReporter(console), tmp_path, count=2)
    lines = console.file.getvalue().strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 2 and all(line.startswith("saved ") for line in lines)


def test_choice_of_reporter() -> None:
    assert type(choose_reporter(quiet=True, tty=True, total=1)) is Reporter
    live = choose_reporter(quiet=False, tty=True, total=4)
    live.close()
    assert isinstance(live, LiveReporter)
    assert type(choose_reporter(quiet=False, tty=False, total=1)) is LineReporter
