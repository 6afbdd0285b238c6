"""What a run shows: live text for one conversation, a board for many, nothing with -q."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

from graph_distill.context import PipelineContext
from graph_distill.conversation.scenarios import builtin_scenarios
from graph_distill.run.generation import RunPlan, run_conversations
from graph_distill.run.progress import (
    BoardReporter,
    LineReporter,
    LiveReporter,
    Reporter,
    choose_reporter,
)
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.roles import RoleResponder


def run(reporter: Reporter, tmp_path: Path, count: int, typo_rate: float = 0.0) -> list[dict]:
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
            distill=False,
        )
        summary = asyncio.run(run_conversations(plan, ctx, ctx, reporter))
    assert not summary.failures
    return [json.loads(p.read_text()) for p in summary.written]


def test_live_reporter_streams_the_whole_conversation(tmp_path: Path) -> None:
    out = io.StringIO()
    [record] = run(LiveReporter(out), tmp_path, count=1, typo_rate=1.0)
    shown = out.getvalue()
    for message in record["conversation"]:
        # what is shown is what is saved: the user's text after noise, the assistant's reply
        assert message["content"] in shown
    assert shown.count("[user]") == 3 and shown.count("[assistant]") == 3
    assert "saved " in shown


def test_board_reporter_shows_rounds_per_conversation(tmp_path: Path) -> None:
    out = io.StringIO()
    run(BoardReporter(out, min_interval=0.0), tmp_path, count=3)
    shown = out.getvalue()
    assert "3/3" in shown and "1/3" in shown
    assert shown.count("saved ") == 3
    assert "[3 done]" in shown


def test_line_reporter_prints_one_line_per_file(tmp_path: Path) -> None:
    out = io.StringIO()
    run(LineReporter(out), tmp_path, count=2)
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("saved ") for line in lines)


def test_choice_of_reporter() -> None:
    assert type(choose_reporter(quiet=True, concurrent_items=1, tty=True)) is Reporter
    assert isinstance(choose_reporter(quiet=False, concurrent_items=1, tty=True), LiveReporter)
    assert isinstance(choose_reporter(quiet=False, concurrent_items=4, tty=True), BoardReporter)
    chosen = choose_reporter(quiet=False, concurrent_items=1, tty=False)
    assert type(chosen) is LineReporter
