"""``index.html``: the figures as cards and tables, the plots inline, and the viewer. The page
works opened from file:// with no network: styles, script and list are inline, and each
conversation is a script file beside it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from importlib import resources
from typing import Any

from graph_distill.report.stats import figure_text
from graph_distill.report.viewer import script_json

Row = Sequence[Any]


def _asset(name: str) -> str:
    return resources.files("graph_distill.report").joinpath(f"assets/{name}").read_text("utf-8")


def _usd(amount: float | None) -> str | None:
    return None if amount is None else f"{amount:.4f}"


def card(label: str, value: Any, figure: str | None = None, note: str = "") -> str:
    attribute = f' data-figure="{escape(figure)}"' if figure else ""
    note_html = f'<span class="note">{escape(note)}</span>' if note else ""
    return (
        f'<div class="card"><span class="label">{escape(label)}</span>'
        f'<span class="value"{attribute}>{escape(figure_text(value))}</span>{note_html}</div>'
    )


def table(headers: Sequence[str], rows: Iterable[Row], name: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{escape(figure_text(c))}</td>'
            if isinstance(c, int | float)
            else f"<td>{escape(figure_text(c))}</td>"
            for c in row
        )
        + "</tr>"
        for row in rows
    )
    attribute = f' data-table="{escape(name)}"' if name else ""
    return f"<table{attribute}><tr>{head}</tr>{body}</table>"


def counts_table(counts: Mapping[str, int], header: str, name: str = "") -> str:
    return table([header, "count"], counts.items(), name)


def distribution_rows(label: str, figures: Mapping[str, Any]) -> Row:
    return [label, *(figures.get(k) for k in ("count", "min", "median", "mean", "p90", "max"))]


DISTRIBUTION_HEADERS = ("", "count", "min", "median", "mean", "p90", "max")


def _plots(plots: Mapping[str, str], *names: str) -> str:
    return (
        '<div class="grid">'
        + "".join(
            f'<div class="plot" data-plot="{name}">{plots[name]}</div>'
            for name in names
            if name in plots
        )
        + "</div>"
    )


def profile_section(f: dict[str, Any], plots: Mapping[str, str]) -> str:
    usage = f["usage"]
    cards = "".join(
        [
            card("Conversations", f["conversations"], "conversations"),
            card("Rounds", f["rounds"]["total"], "rounds"),
            card("Distilled files", f["distilled_files"], "distilled_files"),
            card("Realized typo rate", f["typo_rate"], "typo_rate", "noised user messages"),
            card("Topic switches", f["topic_switches"]["total"], "topic_switches"),
            card("Role breaks regenerated", f["role_breaks"]["regenerated"], "role_breaks"),
            card(
                "Estimated cost (USD)", _usd(usage["cost_usd"]), "cost_usd", "from the run reports"
            ),
        ]
    )
    lengths = [distribution_rows(role, v) for role, v in f["message_words"].items()]
    recorded = [
        [phase, *(u.get(k) for k in ("calls", "input_tokens", "cached_tokens", "output_tokens"))]
        for phase, u in usage["recorded"].items()
    ]
    runs = [
        [run["path"], run["started_at"], (run["phases"].get("total") or {}).get("cost_usd")]
        for run in usage["runs"]
    ]
    return "".join(
        [
            '<section id="profile"><h2>Dataset profile</h2>',
            f'<div class="cards">{cards}</div>',
            _plots(plots, "rounds", "message_words", "termination_reasons", "topic_switches"),
            '<div class="grid"><div><h3>Rounds</h3>',
            table(DISTRIBUTION_HEADERS, [distribution_rows("rounds", f["rounds"])], "rounds"),
            "<h3>Words per message</h3>",
            table(DISTRIBUTION_HEADERS, lengths, "message_words"),
            "<h3>Topic switches per conversation</h3>",
            table(
                DISTRIBUTION_HEADERS,
                [distribution_rows("switches", f["topic_switches"]["per_conversation"])],
            ),
            "</div><div><h3>Scenarios</h3>",
            counts_table(f["scenarios"], "scenario", "scenarios"),
            "<h3>Termination reasons</h3>",
            counts_table(f["termination_reasons"], "reason", "termination_reasons"),
            "<h3>Topic switch reasons</h3>",
            counts_table(f["topic_switches"]["reasons"], "reason"),
            "</div><div><h3>Typo edits</h3>",
            counts_table(f["typos"]["edit_kinds"], "edit"),
            "<h3>Role breaks</h3>",
            counts_table(f["role_breaks"]["reasons"], "reason"),
            "<h3>Tokens recorded in the files</h3>",
            table(["phase", "calls", "input", "cached", "output"], recorded),
            "<h3>Run reports</h3>",
            table(["report", "started", "cost (USD)"], runs) if runs else "<p>None found.</p>",
            "</div></div></section>",
        ]
    )


def quality_section(f: dict[str, Any], plots: Mapping[str, str], numbers: Mapping[str, int]) -> str:
    degeneration, near = f["degeneration"], f["near_duplicates"]
    distinct = f["distinct_2"]
    cards = "".join(
        [
            card(
                "Degenerate rounds",
                degeneration["share"],
                "degeneration",
                "share of rounds repeating an earlier message",
            ),
            card(
                "Degenerate conversations",
                degeneration["degenerate_conversations"],
                "degenerate_conversations",
                f"at least {degeneration['conversation_share_threshold']:g} of rounds",
            ),
            card(
                "Role breaks regenerated",
                f["role_breaks"]["share_of_user_messages"],
                "role_break_share",
                "per user message",
            ),
            *(
                card(f"Distinct-2 ({role})", value, f"distinct_2_{role}")
                for role, value in distinct.items()
            ),
            card(
                "Near-duplicate conversations",
                len(near["duplicates"]),
                "near_duplicates",
                f"Jaccard ≥ {near['jaccard']:g} on word {near['shingle_words']}-grams",
            ),
        ]
    )
    pairs = "".join(
        f'<tr><td><a href="#c={numbers.get(p["a"], "")}">{escape(p["a"])}</a></td>'
        f'<td><a href="#c={numbers.get(p["b"], "")}">{escape(p["b"])}</a></td>'
        f'<td class="num">{p["jaccard"]:g}</td></tr>'
        for p in near["pairs"][:100]
    )
    worst = [[w["key"], w["share"]] for w in degeneration["worst"]]
    return "".join(
        [
            '<section id="quality"><h2>Generation quality</h2>',
            f'<div class="cards">{cards}</div>',
            '<p class="explain">A round is degenerate when its user message or its reply mostly '
            "repeats an earlier message of the same speaker (word-pair similarity at least "
            f"{degeneration['similarity']:g}, the stall detector's word-pair measure): the "
            "loops of mutual praise small models fall into.</p>",
            _plots(plots, "degeneration"),
            '<div class="grid"><div><h3>Most degenerate conversations</h3>',
            table(["conversation", "share"], worst) if worst else "<p>None.</p>",
            "</div><div><h3>Near-duplicate pairs</h3>",
            '<table data-table="near_duplicates"><tr><th>earlier</th><th>later</th>'
            f"<th>Jaccard</th></tr>{pairs}</table>"
            if pairs
            else "<p>None.</p>",
            "</div></div></section>",
        ]
    )


def distillation_section(f: dict[str, Any], plots: Mapping[str, str]) -> str:
    coverage, validity = f["coverage"], f["citation_validity"]
    if not coverage["files"]:
        return (
            '<section id="distillation"><h2>Distillation quality</h2>'
            "<p>No distilled files (give -d).</p></section>"
        )
    compression, raw = f["compression"], f["raw_chunks"]
    cards = "".join(
        [
            card("Coverage", coverage["share"], "coverage", "share of turns cited by a note item"),
            card("Citations in their chunk", validity["in_range_share"], "citation_in_range"),
            card(
                "Items supported by their turns",
                validity["supported_share"],
                "citation_supported",
                "words found in the cited turns",
            ),
            card(
                "Items uncited",
                validity["uncited_share"],
                "uncited_share",
                "citations supplied by the distiller count here",
            ),
            card("Raw chunks", raw["raw"], "raw_chunks", f"of {raw['chunks']:,} chunks"),
            card(
                "Compression",
                compression["conversation_per_notes_word"],
                "compression",
                "conversation words per chunk-notes word",
            ),
        ]
    )
    validity_rows = [[k.replace("_", " "), v] for k, v in validity.items()]
    compression_rows = [[k.replace("_", " "), v] for k, v in compression.items()]
    return "".join(
        [
            '<section id="distillation"><h2>Distillation quality</h2>',
            f'<div class="cards">{cards}</div>',
            '<p class="explain">Computed from the chunk notes\' citations. An item whose turns the '
            "distiller supplied (marked <code>cited</code> in the notes: the model cited none) "
            "counts as uncited, so these figures are not perfect by construction.</p>",
            _plots(plots, "coverage_by_position", "coverage"),
            '<div class="grid"><div><h3>Coverage by position</h3>',
            table(
                ["tenth of the conversation", "share of turns cited"],
                [[f"{10 * i}–{10 * i + 10}%", v] for i, v in enumerate(f["coverage_by_position"])],
                "coverage_by_position",
            ),
            "</div><div><h3>Citations</h3>",
            table(["", ""], validity_rows, "citation_validity"),
            "</div><div><h3>Compression</h3>",
            table(["", ""], compression_rows),
            "</div></div></section>",
        ]
    )


def reference_section(f: dict[str, Any], plots: Mapping[str, str]) -> str:
    if "reference" not in f:
        return ""
    reference = f["reference"]
    sim, real = reference["simulated"], reference["real"]
    rows = [
        ["user messages", sim["user_messages"], real["user_messages"]],
        ["median words", sim["words"]["median"], real["words"]["median"]],
        ["p90 words", sim["words"]["p90"], real["words"]["p90"]],
        ["share of questions", sim["question_share"], real["question_share"]],
        ["share with a likely typo", sim["likely_typo_share"], real["likely_typo_share"]],
        ["vocabulary", sim["vocabulary"], real["vocabulary"]],
    ]
    overlap = reference["vocabulary_overlap"]
    return "".join(
        [
            '<section id="reference"><h2>Simulated users beside real ones</h2>',
            '<div class="cards">',
            card(
                "Jaccard of top words",
                overlap["jaccard_of_top_words"],
                "vocabulary_jaccard",
                f"top {overlap['top_words']:,} words each",
            ),
            card(
                "Simulated words real users use",
                overlap["simulated_words_in_real_vocabulary"],
                "vocabulary_coverage",
            ),
            "</div>",
            _plots(plots, "reference"),
            table(["", "simulated", "real"], rows, "reference"),
            '<p class="explain">A likely typo is a word of three letters or more that no '
            "assistant message and no other user message of either dataset contains; the same "
            "rule judges both sides.</p></section>",
            realism_section(f, plots),
        ]
    )


def realism_section(f: dict[str, Any], plots: Mapping[str, str]) -> str:
    if "realism" not in f:
        return ""
    realism = f["realism"]
    rows = [
        [m["label"], m["simulated"], m["reference"], m["distance"]]
        for m in realism["metrics"].values()
    ]
    return "".join(
        [
            '<section id="realism"><h2>Realism of the simulated users</h2><div class="cards">',
            card(
                "Realism distance", realism["distance"], "realism_distance", "0 = as the reference"
            ),
            "</div>",
            _plots(plots, "realism_message_words", "realism_first_message_share", "realism_mattr"),
            table(["metric", "simulated", "reference", "distance"], rows, "realism"),
            '<p class="explain">Each distance is the Kolmogorov-Smirnov distance between the '
            "two sides' distributions (for a yes/no mark, the difference of the shares); the "
            "summary is their mean.</p></section>",
        ]
    )


def judge_section(f: dict[str, Any]) -> str:
    if "judge" not in f:
        return ""
    judge = f["judge"]
    per_file = [
        [row["key"], row["items"], row["supported"], row["share"]] for row in judge["files"]
    ]
    usage = judge["usage"]
    return "".join(
        [
            '<section id="judge"><h2>Judge</h2><div class="cards">',
            card("Items judged", judge["items"], "judge_items"),
            card(
                "Supported", judge["supported_share"], "judge_supported", "by the turns they cite"
            ),
            card(
                "Calls", usage["calls"], "judge_calls", f"estimated {judge['estimate']['calls']:,}"
            ),
            card(
                "Cost (USD)",
                _usd(judge["cost_usd"]),
                "judge_cost",
                f"estimated {_usd(judge['estimate']['cost_usd'])}",
            ),
            "</div>",
            table(["conversation", "items", "supported", "share"], per_file, "judge"),
            "</section>",
        ]
    )


def render_page(
    figures: dict[str, Any], plots: Mapping[str, str], entries: list[dict[str, Any]]
) -> str:
    numbers = {entry["key"]: entry["n"] for entry in entries}
    inputs = figures["inputs"]
    source = f"-c {inputs['conversations']}" + (
        f" -d {inputs['distilled']}" if inputs["distilled"] else ""
    )
    skipped = "".join(f"<li>{escape(s)}</li>" for s in inputs["skipped"])
    return "".join(
        [
            '<!doctype html><html lang="en"><head><meta charset="utf-8">',
            "<title>graph-distill report</title>",
            f"<style>{_asset('viewer.css')}</style></head><body>",
            "<header><h1>graph-distill report</h1>",
            f"<p>{escape(source)} · generated {escape(figures['generated_at'])} · "
            "figures also in report.json</p>",
            f"<ul>{skipped}</ul>" if skipped else "",
            '<nav><a href="#profile">Profile</a><a href="#quality">Generation quality</a>'
            '<a href="#distillation">Distillation quality</a>'
            + ('<a href="#reference">Reference</a>' if "reference" in figures else "")
            + ('<a href="#judge">Judge</a>' if "judge" in figures else "")
            + '<a href="#viewer">Conversations</a></nav></header>',
            profile_section(figures, plots),
            quality_section(figures, plots, numbers),
            distillation_section(figures, plots),
            reference_section(figures, plots),
            judge_section(figures),
            '<section id="viewer"><h2>Conversations</h2><div class="layout"><div>',
            '<input id="search" type="search" '
            'placeholder="Search name, id, scenario, first message">',
            '<div id="pager"><button id="prev">‹</button><button id="next">›</button>',
            '<span id="page-info"></span></div><div id="list"></div></div>',
            '<div id="conversation"><p class="explain">Pick a conversation.</p></div>',
            "</div></section>",
            f'<script id="gd-index" type="application/json">{script_json(entries)}</script>',
            f"<script>{_asset('viewer.js')}</script>",
            "</body></html>\n",
        ]
    )
