"""Small figures shared by the report's sections: words, distributions, histograms, shares."""

from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from typing import Any

_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """Lower-cased words (runs of letters, digits and underscores)."""
    return _WORD.findall(text.lower())


def share(part: float, whole: float) -> float | None:
    """``part / whole`` rounded for the report; None when there is nothing to divide."""
    return round(part / whole, 4) if whole else None


def distribution(values: Sequence[float]) -> dict[str, Any]:
    """count, min, p10, median, mean, p90, max of ``values`` (None figures when empty)."""
    if not values:
        return dict.fromkeys(("count", "min", "p10", "median", "mean", "p90", "max"), None) | {
            "count": 0
        }
    ordered = sorted(values)
    return {
        "count": len(ordered),
        "min": ordered[0],
        "p10": _quantile(ordered, 0.1),
        "median": statistics.median(ordered),
        "mean": round(statistics.fmean(ordered), 2),
        "p90": _quantile(ordered, 0.9),
        "max": ordered[-1],
    }


def histogram(values: Sequence[float], bins: int = 20) -> dict[str, list[float]]:
    """Equal-width bins over [min, max]: ``edges`` (bins + 1) and ``counts``."""
    if not values:
        return {"edges": [], "counts": []}
    low, high = min(values), max(values)
    if low == high:
        return {"edges": [low, high + 1], "counts": [len(values)]}
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(int((value - low) / width), bins - 1)] += 1
    return {"edges": [round(low + width * i, 3) for i in range(bins + 1)], "counts": counts}


def _quantile(ordered: Sequence[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def figure_text(value: Any) -> str:
    """A figure as shown to people: a dash for none, thousands separated, floats short."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
