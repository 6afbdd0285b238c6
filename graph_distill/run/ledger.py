"""What a run spent: calls and tokens per phase priced per million tokens, shown as a table at
the end and kept in ``run_report.json``; and the token budget that stops new conversations."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol, get_args
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.outputs import ChatGeneration, LLMResult

from graph_distill.context import ModelContext
from graph_distill.llm.models import Role, model_name
from graph_distill.llm.settings import is_mimo, resolve_settings
from graph_distill.llm.throttle import ThrottleStats
from graph_distill.llm.usage import Usage, add_usage, empty_usage, usage_of

Phase = Literal["generation", "distillation"]
PHASES: tuple[Phase, ...] = ("generation", "distillation")
TOKENS_PER_PRICE_UNIT = 1_000_000


@dataclass(frozen=True, kw_only=True)
class Prices:
    """USD per million tokens. Servers count cached tokens within the input tokens; those are
    charged at ``cached_input`` instead of ``input``."""

    input: float
    cached_input: float
    output: float
    source: str


# List prices of mimo-v2-flash (USD per 1M tokens) as shown for the provider "Xiaomi" on
# https://vercel.com/ai-gateway/models/mimo-v2-flash: input 0.10, cache read 0.01, output 0.30.
# Input and output match Xiaomi's launch figures (0.1 / 0.3 USD, December 2025, as reported
# e.g. by https://www.donews.com/news/detail/1/6311141.html). Xiaomi's own price page could not
# be read from here: check https://platform.xiaomimimo.com and pass --price-* if they changed.
MIMO_V2_FLASH_PRICES = Prices(
    input=0.10,
    cached_input=0.01,
    output=0.30,
    source="mimo-v2-flash list prices (Xiaomi, via the Vercel AI Gateway listing)",
)


LOCAL_MODEL_PRICES = Prices(
    input=0.0, cached_input=0.0, output=0.0, source="the embedded local model costs nothing"
)


def default_prices(base_url: str, *, local: bool) -> Prices:
    """The prices a run is estimated at unless --price-* says otherwise."""
    if local:
        return LOCAL_MODEL_PRICES
    if is_mimo(base_url):
        return MIMO_V2_FLASH_PRICES
    return replace(
        MIMO_V2_FLASH_PRICES,
        source=f"{MIMO_V2_FLASH_PRICES.source}; {base_url} is not MiMo: set --price-*",
    )


def prices_with(
    *,
    input: float | None = None,
    cached_input: float | None = None,
    output: float | None = None,
    defaults: Prices = MIMO_V2_FLASH_PRICES,
) -> Prices:
    """``defaults`` with the given prices replacing theirs (the CLI's --price-* flags)."""
    given = {"input": input, "cached_input": cached_input, "output": output}
    changes = {name: value for name, value in given.items() if value is not None}
    if not changes:
        return defaults
    names = ", ".join(name.replace("_", " ") for name in changes)
    return replace(defaults, **changes, source=f"{defaults.source}; {names} set by flag")


def estimate_cost(usage: Mapping[str, int], prices: Prices = MIMO_V2_FLASH_PRICES) -> float:
    """Estimated USD cost of ``usage`` at ``prices``."""
    cached = int(usage.get("cached_tokens", 0))
    uncached = max(0, int(usage.get("input_tokens", 0)) - cached)
    output = int(usage.get("output_tokens", 0))
    dollars_per_million = (
        uncached * prices.input + cached * prices.cached_input + output * prices.output
    )
    return dollars_per_million / TOKENS_PER_PRICE_UNIT


def total_tokens(usage: Mapping[str, int]) -> int:
    return int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))


@dataclass(frozen=True)
class LedgerRow:
    phase: str
    usage: Usage
    cost_usd: float
    wall_seconds: float | None

    def figures(self) -> dict[str, Any]:
        wall = None if self.wall_seconds is None else round(self.wall_seconds, 3)
        return {**self.usage, "cost_usd": round(self.cost_usd, 6), "wall_seconds": wall}


@dataclass
class _PhaseUsage:
    usage: Usage = field(default_factory=empty_usage)
    first_start: float = math.inf
    last_end: float = -math.inf


class CostLedger:
    """Usage per phase, the time span each phase was at work (phases overlap in ``run``: each
    conversation is distilled as soon as it is saved) and the token budget it is spent from."""

    def __init__(
        self,
        prices: Prices = MIMO_V2_FLASH_PRICES,
        *,
        budget_tokens: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.prices = prices
        self.budget = TokenBudget(budget_tokens)
        self._clock = clock
        self.started = clock()
        self.started_at = datetime.now().astimezone()
        self._phases = {phase: _PhaseUsage() for phase in PHASES}

    def now(self) -> float:
        return self._clock()

    def record(self, phase: Phase, usage: Mapping[str, int] | None, started: float) -> None:
        """Work of ``phase`` that began at ``started`` (a ``now()`` reading) and ends now."""
        tally = self._phases[phase]
        tally.usage = add_usage(tally.usage, usage)
        tally.first_start = min(tally.first_start, started)
        tally.last_end = max(tally.last_end, self._clock())
        self.budget.spend(usage)

    def callback(self, phase: Phase | Mapping[str, Phase]) -> LedgerCallback:
        """A callback handler recording every model call of a graph run as ``phase``, or, for
        a graph of subgraphs, by the phase of the top-level node the call runs in."""
        return LedgerCallback(self, phase)

    def row(self, phase: Phase) -> LedgerRow:
        tally = self._phases[phase]
        wall = tally.last_end - tally.first_start if tally.first_start <= tally.last_end else None
        return LedgerRow(phase, tally.usage, estimate_cost(tally.usage, self.prices), wall)

    def total(self) -> LedgerRow:
        usage = empty_usage()
        for tally in self._phases.values():
            usage = add_usage(usage, tally.usage)
        wall = self._clock() - self.started
        return LedgerRow("total", usage, estimate_cost(usage, self.prices), wall)

    def rows(self) -> list[LedgerRow]:
        return [*(self.row(phase) for phase in PHASES), self.total()]

    def figures(self) -> dict[str, Any]:
        return {row.phase: row.figures() for row in self.rows()}


def format_usd(amount: float) -> str:
    return f"${amount:,.2f}" if amount >= 1 else f"${amount:.4f}"


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class LedgerCallback(BaseCallbackHandler):
    """Records each model call as it ends (retried and failed items included, so the ledger
    holds what the server billed), spanning the phase from the call's start."""

    # Called in the event loop's thread, in order: no thread pool, no lock needed.
    run_inline = True

    def __init__(self, ledger: CostLedger, phase: Phase | Mapping[str, Phase]) -> None:
        self.ledger = ledger
        self.phase = phase
        self._started: dict[UUID, tuple[float, Phase]] = {}

    def on_chat_model_start(
        self, *args: Any, run_id: UUID, metadata: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        self._started[run_id] = (self.ledger.now(), self._phase_of(metadata or {}))

    def _phase_of(self, metadata: Mapping[str, Any]) -> Phase:
        if isinstance(self.phase, str):
            return self.phase
        top_node = str(metadata.get("langgraph_checkpoint_ns", "")).split(":", 1)[0]
        return self.phase.get(top_node, PHASES[0])

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        started, phase = self._started.pop(run_id, (self.ledger.now(), PHASES[0]))
        generations = response.generations[0] if response.generations else []
        if generations and isinstance(generations[0], ChatGeneration):
            self.ledger.record(phase, usage_of(generations[0].message), started)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._started.pop(run_id, None)


class TokenBudget:
    """Stops new conversations once ``limit_tokens`` tokens (input + output, every phase) have
    been spent; None means no limit. Conversations already running are finished, so a run may
    end somewhat above the limit."""

    def __init__(self, limit_tokens: int | None) -> None:
        if limit_tokens is not None and limit_tokens < 1:
            raise ValueError("limit_tokens must be >= 1 (or None for no limit)")
        self.limit_tokens = limit_tokens
        self.spent_tokens = 0

    def spend(self, usage: Mapping[str, int] | None) -> None:
        self.spent_tokens += total_tokens(usage or {})

    @property
    def exhausted(self) -> bool:
        return self.limit_tokens is not None and self.spent_tokens >= self.limit_tokens

    def message(self) -> str:
        return (
            f"the token budget is spent ({self.spent_tokens:,} of {self.limit_tokens or 0:,} "
            "tokens, input + output)"
        )

    def figures(self) -> dict[str, Any]:
        return {
            "limit_tokens": self.limit_tokens,
            "spent_tokens": self.spent_tokens,
            "exhausted": self.exhausted,
        }


class RunOutcome(Protocol):
    """What ``run_report`` needs of a run's summary (``runner.RunSummary`` fits)."""

    @property
    def ledger(self) -> CostLedger: ...

    @property
    def written(self) -> Sequence[Path]: ...

    @property
    def distilled(self) -> Sequence[Path]: ...

    @property
    def skipped(self) -> Sequence[Path]: ...

    @property
    def kept(self) -> Sequence[Path]: ...

    @property
    def failures(self) -> Sequence[tuple[str, str]]: ...

    @property
    def not_started(self) -> int: ...

    @property
    def unfinished(self) -> int: ...

    @property
    def raw_chunks(self) -> int: ...

    @property
    def stalled(self) -> int: ...

    @property
    def replaced(self) -> int: ...


def report_settings(context: ModelContext) -> dict[str, Any]:
    """The run's settings for the report: every context field but the key, with the server,
    the default model and each role's model resolved (flags, environment, ``.env``)."""
    values = {f.name: getattr(context, f.name) for f in fields(context) if f.name != "api_key"}
    resolved = resolve_settings({"base_url": context.base_url, "model": context.model})
    roles = [role for role in get_args(Role) if hasattr(context, f"{role}_model")]
    values.update(
        base_url=resolved.base_url,
        model=resolved.model,
        models={role: model_name(context, role) for role in roles},
    )
    return values


def run_report(
    outcome: RunOutcome,
    context: ModelContext,
    *,
    throttle: ThrottleStats | None = None,
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The figures of ``run_report.json``; ``settings`` adds run settings the context lacks."""
    ledger = outcome.ledger
    prices = ledger.prices
    return {
        "started_at": ledger.started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "settings": {
            name: value
            for name, value in {**report_settings(context), **(settings or {})}.items()
            if name != "api_key"
        },
        "prices_usd_per_million_tokens": {
            "input": prices.input,
            "cached_input": prices.cached_input,
            "output": prices.output,
            "source": prices.source,
        },
        "phases": ledger.figures(),
        "counts": {
            "written": len(outcome.written),
            "distilled": outcome.distilled,
            "failed": len(outcome.failures),
            "skipped": outcome.skipped,
            "kept_from_before": len(outcome.kept),
            "not_started_over_budget": outcome.not_started,
            "unfinished": outcome.unfinished,
            "raw_chunks": outcome.raw_chunks,
            "stalled": outcome.stalled,
            "replaced_stalled": outcome.replaced,
        },
        "failures": [{"item": item, "reason": reason} for item, reason in outcome.failures],
        "budget": ledger.budget.figures(),
        "requests": _throttle_figures(throttle) if throttle is not None else None,
    }


def _throttle_figures(stats: ThrottleStats) -> dict[str, Any]:
    return {
        "sent": stats.requests,
        "failed": stats.failed,
        "backoff_pauses": len(stats.pauses),
        "backoff_seconds": round(stats.paused_seconds, 3),
    }
