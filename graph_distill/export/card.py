"""The dataset card of an export (``README.md`` with a Hugging Face header): what the rows
are, how they were chosen, and the dataset's profile figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from graph_distill.report.stats import figure_text as shown

FIELDS = {
    "sharegpt": '`id`, `conversations`: [{"from": "human" | "gpt" | "system", "value"}]',
    "openai": '`messages`: [{"role": "user" | "assistant" | "system", "content"}]',
    "parquet": "`id`, `source`, `scenario`, `rounds`, `termination_reason`, "
    "`messages` (list of {role, content}), `final_summary`",
    "summaries": "`id`, `source`, `input` (messages), `output` (text), "
    '`kind`: "conversation_summary" (conversation -> final summary) or '
    '"chunk_notes" (chunk -> its notes)',
}


@dataclass(frozen=True)
class CardFacts:
    export_format: str
    data_file: str
    rows: int
    conversations: int
    source: str
    clean: bool
    filters: Sequence[str]
    dropped: Mapping[str, int]
    realism: Mapping[str, Any] | None = None


def _counts(counts: Mapping[str, int], header: str) -> list[str]:
    if not counts:
        return ["(none)"]
    return [f"| {header} | count |", "|---|---:|", *(f"| {k} | {v:,} |" for k, v in counts.items())]


def render_card(facts: CardFacts, profile: Mapping[str, Any], source: Mapping[str, Any]) -> str:
    """``profile``: figures of the exported conversations; ``source``: quality figures of the
    dataset they were chosen from (same keys as report.json)."""
    loader = "parquet" if facts.export_format == "parquet" else "json"
    rounds = profile["rounds"]
    lines = [
        "---",
        "configs:",
        "- config_name: default",
        f"  data_files: {facts.data_file}",
        "tags: [synthetic, conversations, graph-distill]",
        "---",
        "",
        "# Dataset card",
        "",
        f"Exported by `graph-distill export --format {facts.export_format}` from {facts.source}: "
        f"{facts.rows:,} rows from {facts.conversations:,} conversations.",
        "",
        f"Fields: {FIELDS[facts.export_format]}.",
        "",
        "User messages are "
        + (
            "the clean text (before typos were added)."
            if facts.clean
            else "as generated, typos included."
        ),
        "",
        "Filters: " + ("; ".join(facts.filters) if facts.filters else "none") + ".",
        *(f"- dropped by {name}: {count:,}" for name, count in facts.dropped.items()),
        "",
        "```python",
        "from datasets import load_dataset",
        f'rows = load_dataset("{loader}", data_files="{facts.data_file}", split="train")',
        "```",
        "",
        "## Profile of the exported conversations",
        "",
        f"- conversations: {shown(profile['conversations'])}; rounds: {shown(rounds['total'])} "
        f"(min {shown(rounds['min'])}, median {shown(rounds['median'])}, "
        f"max {shown(rounds['max'])})",
        f"- realized typo rate (noised user messages): {shown(profile['typo_rate'])}",
        f"- topic switches: {shown(profile['topic_switches']['total'])}",
        f"- role breaks regenerated: {shown(profile['role_breaks']['regenerated'])}",
        "",
        *_counts(profile["scenarios"], "scenario"),
        "",
        *_counts(profile["termination_reasons"], "termination reason"),
        "",
        "## Quality of the source dataset",
        "",
        "- degenerate rounds (repeating an earlier message): "
        + shown(source["degeneration"]["share"]),
        f"- near-duplicate conversations: {len(source['near_duplicates']['duplicates']):,}",
        "- distinct-2: "
        + ", ".join(f"{role} {shown(v)}" for role, v in source["distinct_2"].items()),
    ]
    coverage = source["coverage"]
    if coverage["files"]:
        validity = source["citation_validity"]
        lines += [
            f"- notes coverage (share of turns cited): {shown(coverage['share'])}; "
            f"citations inside their chunk: {shown(validity['in_range_share'])}; "
            f"items uncited: {shown(validity['uncited_share'])}; "
            f"chunks kept raw: {shown(source['raw_chunks']['raw'])}",
        ]
    if facts.realism is not None:
        lines += [
            "",
            "## Realism of the users (distance to the reference, 0 = the same)",
            "",
            f"- realism distance: {shown(facts.realism['distance'])}",
            *(
                f"- {m['label']}: {shown(m['simulated'])} (reference {shown(m['reference'])}, "
                f"distance {shown(m['distance'])})"
                for m in facts.realism["metrics"].values()
            ),
        ]
    return "\n".join(lines) + "\n"
