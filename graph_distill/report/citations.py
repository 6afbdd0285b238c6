"""Distillation quality from the citations: which turns the notes cite (coverage, and where in
the conversation), whether citations hold (inside the chunk, words found in the cited turns),
compression, and chunks kept raw. Items whose turns the distiller supplied count as uncited."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from graph_distill.distill.notes import CITED_KEY, model_cited
from graph_distill.distill.state import NOTE_SECTIONS
from graph_distill.report.stats import distribution, histogram, share, words

POSITION_BINS = 10
# An item is supported when this share of its content words occur in the turns it cites.
SUPPORTED_SHARE = 0.5
MIN_CONTENT_LETTERS = 4
_SUFFIXES = ("ing", "ed", "es", "s", "ly")
_STOPWORDS = frozenset(
    "about above after again also because been before being below between both could does "
    "doing down during each from further have having here into itself just more most much "
    "must only other over same should some such than that their them then there these they "
    "this those through under until very were what when where which while will with would "
    "your user assistant conversation discussed discusses explains asks asked".split()
)


def note_items(notes: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    for section in NOTE_SECTIONS:
        yield from (notes or {}).get(section) or []


def content_stems(tokens: Sequence[str]) -> set[str]:
    """The words that carry meaning, crudely stemmed so "caches" matches "cache"."""
    stems = set(map(_content_stem, set(tokens)))
    stems.discard("")
    return stems


@lru_cache(maxsize=1 << 17)
def _content_stem(word: str) -> str:
    """The word's stem, or "" for a word that carries little meaning."""
    if len(word) < MIN_CONTENT_LETTERS or word in _STOPWORDS or word.isdigit():
        return ""
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= MIN_CONTENT_LETTERS - 1:
            return word[: -len(suffix)]
    return word


@lru_cache(maxsize=1 << 16)
def _forms(stem: str) -> tuple[str, ...]:
    return (stem, *(stem + suffix for suffix in _SUFFIXES))


def is_supported(tokens: Sequence[str], cited: Sequence[set[str]]) -> bool:
    """Whether enough of an item's content words (``tokens`` are its words) occur in the cited
    turns (their sets of words), as written or with a common suffix."""
    wanted = content_stems(tokens)
    if not wanted:
        return True
    cited_words = set().union(*cited)
    found = sum(not cited_words.isdisjoint(_forms(stem)) for stem in wanted)
    return found / len(wanted) >= SUPPORTED_SHARE


class _TurnWords:
    """Each turn's set of words, made the first time a note cites it."""

    def __init__(self, tokens: Sequence[Sequence[str]]) -> None:
        self.tokens = tokens
        self.sets: dict[int, set[str]] = {}

    def of(self, turns: Sequence[int]) -> list[set[str]]:
        for turn in turns:
            if turn not in self.sets:
                self.sets[turn] = set(self.tokens[turn])
        return [self.sets[turn] for turn in turns]


@dataclass
class FileCitations:
    """One distilled file against its conversation."""

    turns: int
    cited: set[int] = field(default_factory=set)
    items: int = 0
    filled: int = 0
    inherited: int = 0
    citations: int = 0
    in_range: int = 0
    supported: int = 0
    chunks: int = 0
    raw: int = 0
    notes_words: int = 0
    final_cited: set[int] = field(default_factory=set)
    conversation_words: int = 0
    summary_words: int = 0

    @property
    def model_cited(self) -> int:
        return self.items - self.filled - self.inherited

    @property
    def coverage(self) -> float | None:
        return share(len(self.cited), self.turns)


def file_citations(tokens: Sequence[Sequence[str]], distilled: dict[str, Any]) -> FileCitations:
    """Citation figures of one distilled file; ``tokens`` are its conversation's words."""
    figures = FileCitations(turns=len(tokens))
    figures.conversation_words = sum(len(message_tokens) for message_tokens in tokens)
    figures.summary_words = len(words(str(distilled.get("final_summary") or "")))
    turn_words = _TurnWords(tokens)
    for chunk in distilled.get("distilled_chunks") or []:
        figures.chunks += 1
        if chunk.get("status") == "raw":
            figures.raw += 1
        _check_chunk(figures, turn_words, chunk)
    for item in note_items(distilled.get("final_notes")):
        if model_cited(item):
            turns = item.get("turns") or []
            figures.final_cited.update(
                t for t in turns if isinstance(t, int) and 0 <= t < len(tokens)
            )
    return figures


def _check_chunk(figures: FileCitations, turn_words: _TurnWords, chunk: dict[str, Any]) -> None:
    turns_total = figures.turns
    low, high = (chunk.get("turn_range") or [0, turns_total - 1])[:2]
    notes = chunk.get("notes") or {}
    figures.notes_words += len(words(str(notes.get("topic") or "")))
    for item in note_items(notes):
        figures.items += 1
        item_words = words(item.get("text") or "")
        figures.notes_words += len(item_words)
        mark = item.get(CITED_KEY)
        turns = [t for t in item.get("turns") or [] if isinstance(t, int)]
        if mark is not None or not turns:
            figures.filled += mark != "inherited"
            figures.inherited += mark == "inherited"
            continue
        valid = [t for t in turns if low <= t <= high and 0 <= t < turns_total]
        figures.citations += len(turns)
        figures.in_range += len(valid)
        figures.cited.update(valid)
        figures.supported += is_supported(item_words, turn_words.of(valid))


@dataclass
class Distillation:
    """Gathered one distilled file at a time (``add``); ``figures`` at the end."""

    files: list[FileCitations] = field(default_factory=list)
    by_position: list[list[int]] = field(
        default_factory=lambda: [[0, 0] for _ in range(POSITION_BINS)]
    )
    conversation_words: int = 0
    summary_words: int = 0

    def add(self, figures: FileCitations) -> None:
        self.files.append(figures)
        for turn in range(figures.turns):
            cell = self.by_position[turn * POSITION_BINS // figures.turns]
            cell[0] += 1
            cell[1] += turn in figures.cited
        self.conversation_words += figures.conversation_words
        self.summary_words += figures.summary_words

    def figures(self) -> dict[str, Any]:
        files = self.files
        turns = sum(f.turns for f in files)
        items = sum(f.items for f in files)
        model = sum(f.model_cited for f in files)
        citations = sum(f.citations for f in files)
        notes_words = sum(f.notes_words for f in files)
        chunks = sum(f.chunks for f in files)
        per_file = [f.coverage for f in files if f.coverage is not None]
        return {
            "coverage": {
                "files": len(files),
                "turns": turns,
                "cited_turns": sum(len(f.cited) for f in files),
                "share": share(sum(len(f.cited) for f in files), turns),
                "per_file": {**distribution(per_file), "histogram": histogram(per_file, bins=10)},
                "final_notes_share": share(sum(len(f.final_cited) for f in files), turns),
            },
            "coverage_by_position": [share(cited, total) for total, cited in self.by_position],
            "citation_validity": {
                "items": items,
                "model_cited": model,
                "filled": sum(f.filled for f in files),
                "inherited": sum(f.inherited for f in files),
                "uncited_share": share(items - model, items),
                "citations": citations,
                "in_range": sum(f.in_range for f in files),
                "in_range_share": share(sum(f.in_range for f in files), citations),
                "supported_items": sum(f.supported for f in files),
                "supported_share": share(sum(f.supported for f in files), model),
            },
            "compression": {
                "conversation_words": self.conversation_words,
                "chunk_notes_words": notes_words,
                "summary_words": self.summary_words,
                "conversation_per_notes_word": _ratio(self.conversation_words, notes_words),
                "conversation_per_summary_word": _ratio(
                    self.conversation_words, self.summary_words
                ),
            },
            "raw_chunks": {"chunks": chunks, "raw": sum(f.raw for f in files)}
            | {"share": share(sum(f.raw for f in files), chunks)},
        }


def _ratio(whole: int, part: int) -> float | None:
    return round(whole / part, 2) if part else None
