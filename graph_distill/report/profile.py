"""The dataset profile: counts, rounds, scenarios, endings, topic switches, noise, lengths,
usage and what the runs cost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from graph_distill.conversation.style import is_style_edit
from graph_distill.llm.usage import USAGE_KEYS, add_usage, empty_usage
from graph_distill.report.dataset import Conversation
from graph_distill.report.stats import distribution, histogram, share


@dataclass
class Profile:
    """Figures gathered one conversation at a time (``add``), read once at the end."""

    rounds: list[int] = field(default_factory=list)
    scenarios: Counter[str] = field(default_factory=Counter)
    endings: Counter[str] = field(default_factory=Counter)
    switches: list[int] = field(default_factory=list)
    switch_reasons: Counter[str] = field(default_factory=Counter)
    user_messages: int = 0
    noised: int = 0
    noise_recorded: int = 0
    edit_kinds: Counter[str] = field(default_factory=Counter)
    role_breaks: Counter[str] = field(default_factory=Counter)
    lengths: dict[str, list[int]] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=lambda: {"generation": empty_usage()})
    distilled: int = 0

    def add(self, conversation: Conversation, lengths: dict[str, list[int]]) -> None:
        meta = conversation.metadata
        self.rounds.append(conversation.rounds)
        self.scenarios[conversation.scenario] += 1
        self.endings[str(meta.get("termination_reason") or "(not recorded)")] += 1
        switches = meta.get("topic_switches") or []
        self.switches.append(len(switches))
        self.switch_reasons.update(str(s.get("reason") or "(none)") for s in switches)
        users = sum(m["role"] == "user" for m in conversation.messages)
        self.user_messages += users
        if "noise" in meta:
            self.noise_recorded += users
            # A typo'd message, not a styled one: --typo-rate keeps its meaning.
            self.noised += sum(
                any(not is_style_edit(edit) for edit in n["edits"])
                for n in conversation.noise().values()
            )
            self.edit_kinds.update(
                _edit_kind(edit) for n in conversation.noise().values() for edit in n["edits"]
            )
        self.role_breaks.update(str(b.get("reason") or "(none)") for b in _role_breaks(meta))
        for role, counts in lengths.items():
            self.lengths.setdefault(role, []).extend(counts)
        self.usage["generation"] = add_usage(self.usage["generation"], _usage(meta))
        if conversation.distilled is not None:
            self.distilled += 1
            distill_usage = _usage(conversation.distilled.get("metadata") or {})
            self.usage["distillation"] = add_usage(self.usage.get("distillation"), distill_usage)

    def figures(self, run_reports: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "conversations": len(self.rounds),
            "distilled_files": self.distilled,
            "rounds": {
                "total": sum(self.rounds),
                **distribution(self.rounds),
                "histogram": histogram(self.rounds),
            },
            "scenarios": dict(self.scenarios.most_common()),
            "termination_reasons": dict(self.endings.most_common()),
            "topic_switches": {
                "total": sum(self.switches),
                "per_conversation": {
                    **distribution(self.switches),
                    "histogram": histogram(self.switches, bins=10),
                },
                "reasons": dict(self.switch_reasons.most_common()),
            },
            "typo_rate": share(self.noised, self.noise_recorded),
            "typos": {
                "user_messages": self.noise_recorded,
                "noised": self.noised,
                "edit_kinds": dict(self.edit_kinds.most_common()),
            },
            "role_breaks": {
                "regenerated": sum(self.role_breaks.values()),
                "share_of_user_messages": share(sum(self.role_breaks.values()), self.user_messages),
                "reasons": dict(self.role_breaks.most_common()),
            },
            "message_words": {
                role: {**distribution(counts), "histogram": histogram(counts)}
                for role, counts in sorted(self.lengths.items())
            },
            "usage": _usage_figures(self.usage, run_reports),
        }


def _edit_kind(edit: str) -> str:
    """``"drop article: 'the'"`` -> ``"drop article"``."""
    return edit.split(":", 1)[0].strip() or edit


def _role_breaks(meta: dict[str, Any]) -> list[dict[str, Any]]:
    breaks = meta.get("role_breaks") or []
    return [b for b in breaks if isinstance(b, dict)]


def _usage(meta: dict[str, Any]) -> dict[str, int]:
    usage = meta.get("usage") or {}
    return {key: int(usage.get(key) or 0) for key in USAGE_KEYS}


def _usage_figures(recorded: dict[str, Any], run_reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Tokens the files record, and what the run reports say the runs cost."""
    runs = [_run_cost(report) for report in run_reports]
    costs = [(run["phases"].get("total") or {}).get("cost_usd") for run in runs]
    known = [float(cost) for cost in costs if isinstance(cost, int | float)]
    return {"recorded": recorded, "runs": runs, "cost_usd": round(sum(known), 6) if known else None}


def _run_cost(report: dict[str, Any]) -> dict[str, Any]:
    """What one run report says the run spent, phase by phase."""
    return {
        "path": report["path"],
        "started_at": report.get("started_at"),
        "phases": report.get("phases") or {},
        "prices": report.get("prices_usd_per_million_tokens"),
    }
