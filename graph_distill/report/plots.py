"""The report's plots, drawn by matplotlib from the figures alone and kept as inline SVG."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure

WIDTH, HEIGHT = 5.2, 2.8
COLORS = ("#3b6ea8", "#d9822b", "#5a9e6f", "#b34a4a")
STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "graph-distill",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def svg(draw: Callable[[Axes], None], title: str) -> str:
    """One plot as an ``<svg>`` element (no XML prologue, no fixed pixel size)."""
    # A bare Figure (no pyplot): nothing global, nothing to close, no GUI backend.
    with matplotlib.rc_context(STYLE):
        figure = Figure(figsize=(WIDTH, HEIGHT))
        axes = figure.subplots()
        draw(axes)
        axes.set_title(title, fontsize=10, loc="left")
        figure.tight_layout()
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def histogram_bars(histograms: Mapping[str, Mapping[str, Sequence[float]]], xlabel: str):
    """Draws each named histogram (``edges``/``counts``) as outlined steps on shared axes."""

    def draw(axes: Axes) -> None:
        for (name, figures), color in zip(histograms.items(), COLORS, strict=False):
            edges, counts = figures.get("edges") or [], figures.get("counts") or []
            if counts:
                axes.stairs(counts, edges, label=name, color=color, fill=len(histograms) == 1)
        axes.set_xlabel(xlabel)
        axes.set_ylabel("count")
        if len(histograms) > 1:
            axes.legend(frameon=False)

    return draw


def shares_bars(labels: Sequence[str], values: Sequence[float | None], xlabel: str, ylabel: str):
    def draw(axes: Axes) -> None:
        axes.bar(labels, [v or 0.0 for v in values], color=COLORS[0])
        axes.set_ylim(0, 1)
        axes.set_ylabel(ylabel)
        axes.set_xlabel(xlabel)

    return draw


def counts_barh(counts: Mapping[str, int], xlabel: str):
    def draw(axes: Axes) -> None:
        items = list(counts.items())[:10][::-1]
        axes.barh([_short(k) for k, _ in items], [v for _, v in items], color=COLORS[0])
        axes.set_xlabel(xlabel)

    return draw


def report_plots(figures: dict[str, Any]) -> dict[str, str]:
    """Plot name -> SVG, for the sections whose figures exist."""
    plots = {
        "rounds": svg(
            histogram_bars({"rounds": figures["rounds"]["histogram"]}, "rounds"), "Rounds"
        ),
        "message_words": svg(
            histogram_bars(
                {role: f["histogram"] for role, f in figures["message_words"].items()},
                "words per message",
            ),
            "Message length by role",
        ),
        "termination_reasons": svg(
            counts_barh(figures["termination_reasons"], "conversations"), "Termination reasons"
        ),
        "topic_switches": svg(
            histogram_bars(
                {"switches": figures["topic_switches"]["per_conversation"]["histogram"]},
                "topic switches per conversation",
            ),
            "Topic switches",
        ),
        "degeneration": svg(
            histogram_bars(
                {"share": figures["degeneration"]["per_conversation"]["histogram"]},
                "share of rounds repeating an earlier message",
            ),
            "Degeneration per conversation",
        ),
    }
    if figures["coverage"]["files"]:
        plots["coverage_by_position"] = svg(
            shares_bars(
                [f"{10 * i}%" for i in range(10)],
                figures["coverage_by_position"],
                "position in the conversation (start of each tenth)",
                "share of turns cited",
            ),
            "Coverage by position in the conversation",
        )
        plots["coverage"] = svg(
            histogram_bars({"files": figures["coverage"]["per_file"]["histogram"]}, "coverage"),
            "Coverage per distilled file",
        )
    if "reference" in figures:
        reference = figures["reference"]
        plots["reference"] = svg(
            histogram_bars(
                {side: reference[side]["words"]["histogram"] for side in ("simulated", "real")},
                "words per user message",
            ),
            "User messages: simulated and real",
        )
    if "realism" in figures:
        for name in ("message_words", "first_message_share", "mattr"):
            metric = figures["realism"]["metrics"][name]
            plots[f"realism_{name}"] = svg(
                histogram_bars(_realism_shares(metric), metric["label"]), metric["label"]
            )
    return plots


def _realism_shares(metric: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Each side's histogram as shares of its total, on the metric's bins (the last one open)."""
    edges = [0, *metric["edges"], metric["edges"][-1] * 2]
    sides = {"simulated": metric["simulated_counts"], "reference": metric["reference_counts"]}
    return {
        side: {"edges": edges, "counts": [n / (sum(counts) or 1) for n in counts]}
        for side, counts in sides.items()
    }


def _short(label: str, limit: int = 28) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"
