"""The cost ledger, the token budget and run_report.json."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import openai
import pytest
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from rich.console import Console

from graph_distill.cli.terminal import cost_table
from graph_distill.context import PipelineContext
from graph_distill.llm.models import chat_model
from graph_distill.llm.resources import RunResources
from graph_distill.llm.throttle import ThrottleStats
from graph_distill.llm.usage import Usage
from graph_distill.run.ledger import (
    MIMO_V2_FLASH_PRICES,
    CostLedger,
    Prices,
    TokenBudget,
    default_prices,
    estimate_cost,
    format_duration,
    prices_with,
    run_report,
)
from tests.support.fake_openai import FakeOpenAIServer, FaultRates

SECRET = "sk-test-SECRET-0123456789"
PRICES = Prices(input=2.0, cached_input=0.5, output=8.0, source="test prices")


def usage(inp: int, cached: int, out: int, calls: int = 1) -> Usage:
    return Usage(input_tokens=inp, cached_tokens=cached, output_tokens=out, calls=calls)


@dataclass
class Outcome:
    """Shaped like ``runner.RunSummary`` as far as the report reads it."""

    ledger: CostLedger = field(default_factory=CostLedger)
    written: list[Path] = field(default_factory=list)
    distilled: int = 0
    skipped: int = 0
    kept: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    not_started: int = 0
    unfinished: int = 0
    raw_chunks: int = 0
    stalled: int = 0
    replaced: int = 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- prices and cost


def test_cost_charges_cached_input_at_its_own_price() -> None:
    cost = estimate_cost(usage(1_000_000, 400_000, 200_000), PRICES)
    assert cost == pytest.approx(0.6 * 2.0 + 0.4 * 0.5 + 0.2 * 8.0)


def test_cost_never_goes_negative_when_a_server_reports_more_cached_than_input() -> None:
    assert estimate_cost(usage(10, 50, 0), PRICES) == pytest.approx(50 * 0.5 / 1e6)


def test_default_prices_are_mimo_v2_flash_list_prices() -> None:
    p = MIMO_V2_FLASH_PRICES
    assert (p.input, p.cached_input, p.output) == (0.10, 0.01, 0.30)
    assert "mimo-v2-flash" in p.source


def test_default_prices_follow_the_server() -> None:
    assert default_prices("https://api.xiaomimimo.com/v1", local=False) == MIMO_V2_FLASH_PRICES
    local = default_prices("http://127.0.0.1:8080/v1", local=True)
    assert (local.input, local.cached_input, local.output) == (0.0, 0.0, 0.0)
    other = default_prices("http://127.0.0.1:8000/v1", local=False)
    assert other.output == MIMO_V2_FLASH_PRICES.output
    assert "http://127.0.0.1:8000/v1 is not MiMo: set --price-*" in other.source


def test_prices_from_flags_replace_only_what_was_given() -> None:
    assert prices_with() is MIMO_V2_FLASH_PRICES
    changed = prices_with(output=1.5, cached_input=0.02)
    assert (changed.input, changed.cached_input, changed.output) == (0.10, 0.02, 1.5)
    assert "output" in changed.source and "cached input" in changed.source


# ---------------------------------------------------------------- the ledger


def filled_ledger(clock: Clock, budget_tokens: int | None = None) -> CostLedger:
    ledger = CostLedger(PRICES, budget_tokens=budget_tokens, clock=clock)
    clock.now = 105.0
    ledger.record("generation", usage(3_000, 1_000, 500, calls=4), started=100.0)
    clock.now = 107.0
    ledger.record("generation", usage(2_000, 0, 300, calls=3), started=101.0)
    clock.now = 111.0
    ledger.record("distillation", usage(4_000, 0, 1_200, calls=2), started=105.0)
    clock.now = 112.5
    return ledger


def test_rows_sum_usage_per_phase_and_span_each_phase() -> None:
    clock = Clock()
    generation, distillation, total = filled_ledger(clock).rows()
    assert generation.usage == usage(5_000, 1_000, 800, calls=7)
    assert generation.wall_seconds == pytest.approx(7.0)
    assert distillation.usage == usage(4_000, 0, 1_200, calls=2)
    assert distillation.wall_seconds == pytest.approx(6.0)
    assert total.usage == usage(9_000, 1_000, 2_000, calls=9)
    assert total.wall_seconds == pytest.approx(12.5)
    assert total.cost_usd == pytest.approx(generation.cost_usd + distillation.cost_usd)
    assert total.cost_usd == pytest.approx((8_000 * 2.0 + 1_000 * 0.5 + 2_000 * 8.0) / 1e6)


def test_a_phase_without_items_shows_zeros_and_no_wall_time() -> None:
    clock = Clock()
    ledger = CostLedger(PRICES, clock=clock)
    ledger.record("generation", usage(10, 0, 5), started=100.0)
    assert ledger.row("distillation").wall_seconds is None
    assert ledger.row("distillation").cost_usd == 0.0


def test_table_shows_each_phase_the_total_and_the_prices() -> None:
    clock = Clock()
    console = Console(file=io.StringIO(), width=200)
    console.print(cost_table(filled_ledger(clock)))
    lines = console.file.getvalue().rstrip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 5
    header, generation, distillation, total, prices = lines
    assert header.split() == ["calls", "input", "tokens", "cached", "output", "tokens", "est.",
                              "cost", "wall", "time"]  # fmt: skip
    assert generation.split() == ["generation", "7", "5,000", "1,000", "800", "$0.0149", "7.0", "s"]
    assert distillation.split()[:2] == ["distillation", "2"]
    assert total.split() == ["total", "9", "9,000", "1,000", "2,000", "$0.0325", "12.5", "s"]
    assert prices == (
        "Prices, USD per 1M tokens: input 2, cached input 0.5, output 8 (test prices)."
    )
    assert len({len(line) for line in lines[:4]}) <= 2  # columns line up (trailing cut aside)


@pytest.mark.parametrize(
    ("seconds", "shown"), [(4.25, "4.2 s"), (75, "1 min 15 s"), (3725, "1 h 02 min")]
)
def test_durations_read_naturally(seconds: float, shown: str) -> None:
    assert format_duration(seconds) == shown


@pytest.mark.parametrize("streamed", [False, True])
async def test_ledger_callback_counts_what_the_server_counted(streamed: bool) -> None:
    ledger = CostLedger(MIMO_V2_FLASH_PRICES, budget_tokens=10**9)
    system = SystemMessage("You explain things step by step, patiently and carefully. " * 30)
    config: RunnableConfig = {"callbacks": [ledger.callback("generation")]}
    with FakeOpenAIServer() as server:
        ctx = PipelineContext(base_url=server.base_url, api_key="sk-test")
        model = chat_model(
            ctx, "assistant", temperature=0.7, max_tokens=100, resources=RunResources()
        )
        for question in ("Why is the sky blue?", "And why are sunsets red?"):
            prompt = [system, HumanMessage(question)]
            if streamed:
                async for _ in model.astream(prompt, config):
                    pass
            else:
                await model.ainvoke(prompt, config)
        stats = server.stats
    row = ledger.row("generation")
    assert row.usage == usage(
        stats["prompt_tokens"], stats["cached_tokens"], stats["completion_tokens"], calls=2
    )
    assert stats["cached_tokens"] > 0
    uncached = stats["prompt_tokens"] - stats["cached_tokens"]
    expected = uncached * 0.10 + stats["cached_tokens"] * 0.01 + stats["completion_tokens"] * 0.3
    assert row.cost_usd == pytest.approx(expected / 1e6)
    assert ledger.budget.spent_tokens == stats["prompt_tokens"] + stats["completion_tokens"]
    assert ledger.row("distillation").usage["calls"] == 0


async def test_failed_calls_are_not_counted() -> None:
    ledger = CostLedger()
    with FakeOpenAIServer(faults=FaultRates(rate_500=1.0)) as server:
        ctx = PipelineContext(base_url=server.base_url, api_key="sk-test", max_retries=0)
        model = chat_model(ctx, "user", temperature=0.7, max_tokens=100, resources=RunResources())
        with pytest.raises(openai.InternalServerError):
            await model.ainvoke("hi", {"callbacks": [ledger.callback("generation")]})
    assert ledger.total().usage == usage(0, 0, 0, calls=0)
    assert ledger.row("generation").wall_seconds is None


# ---------------------------------------------------------------- the budget


def test_budget_is_exhausted_once_input_and_output_reach_the_limit() -> None:
    budget = TokenBudget(1_000)
    budget.spend(usage(600, 500, 300))
    assert not budget.exhausted and budget.spent_tokens == 900
    budget.spend(None)
    budget.spend(usage(80, 0, 20))
    assert budget.exhausted
    assert "1,000 of 1,000 tokens" in budget.message()
    assert budget.message().startswith("the token budget is spent")


def test_no_budget_is_never_exhausted() -> None:
    budget = TokenBudget(None)
    budget.spend(usage(10**9, 0, 10**9))
    assert not budget.exhausted


def test_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="limit_tokens"):
        TokenBudget(0)


# ---------------------------------------------------------------- run_report.json


def test_run_report_holds_figures_settings_counts_and_no_key(tmp_path: Path) -> None:
    clock = Clock()
    summary = Outcome(
        ledger=filled_ledger(clock, budget_tokens=50_000),
        written=[tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.json"],
        distilled=2,
        kept=[tmp_path / "k.json"],
        failures=[("#3 Cooking", "the server answered 500: boom")],
        not_started=2,
        unfinished=3,
    )
    ctx = PipelineContext(
        base_url="http://127.0.0.1:9/v1",
        api_key=SECRET,
        model="fake-model",
        distill_model="notes-model",
        requests_per_minute=30.0,
    )
    report = run_report(
        summary,
        ctx,
        throttle=ThrottleStats(requests=12, failed=3, pauses=(2.0, 4.0)),
        settings={"num_conversations": 4, "concurrency": 2, "api_key": SECRET},
    )
    assert SECRET not in json.dumps(report)
    settings = report["settings"]
    assert settings["model"] == "fake-model" and settings["base_url"] == "http://127.0.0.1:9/v1"
    assert settings["models"] == {
        "user": "fake-model",
        "assistant": "fake-model",
        "distill": "notes-model",
    }
    assert settings["requests_per_minute"] == 30.0 and settings["num_conversations"] == 4
    assert "api_key" not in settings
    assert report["counts"] == {
        "written": 3,
        "distilled": 2,
        "failed": 1,
        "skipped": 0,
        "kept_from_before": 1,
        "not_started_over_budget": 2,
        "unfinished": 3,
        "raw_chunks": 0,
        "stalled": 0,
        "replaced_stalled": 0,
    }
    assert report["failures"] == [{"item": "#3 Cooking", "reason": "the server answered 500: boom"}]
    phases = report["phases"]
    assert set(phases) == {"generation", "distillation", "total"}
    assert phases["generation"] == {
        "input_tokens": 5_000,
        "output_tokens": 800,
        "cached_tokens": 1_000,
        "calls": 7,
        "cost_usd": 0.0149,
        "wall_seconds": 7.0,
    }
    assert phases["total"]["cost_usd"] == 0.0325
    assert report["prices_usd_per_million_tokens"] == {
        "input": 2.0,
        "cached_input": 0.5,
        "output": 8.0,
        "source": "test prices",
    }
    assert report["budget"] == {"limit_tokens": 50_000, "spent_tokens": 11_000, "exhausted": False}
    assert report["requests"] == {
        "sent": 12,
        "failed": 3,
        "backoff_pauses": 2,
        "backoff_seconds": 6.0,
    }
    started = datetime.fromisoformat(report["started_at"])
    finished = datetime.fromisoformat(report["finished_at"])
    assert started.tzinfo is not None and started <= finished


def test_an_idle_report_has_zeros_and_no_request_figures() -> None:
    report = run_report(Outcome(), PipelineContext(base_url="http://127.0.0.1:9/v1"))
    assert set(report["counts"].values()) == {0}
    assert report["budget"] == {"limit_tokens": None, "spent_tokens": 0, "exhausted": False}
    assert report["requests"] is None
    assert report["phases"]["generation"]["wall_seconds"] is None
