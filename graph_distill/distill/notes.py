"""Working with notes: cleaning, keeping citations valid, merging repeats, grouping for the
reduce budget."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from graph_distill.distill.state import NOTE_SECTIONS, NoteItem, Notes
from graph_distill.llm.tokens import count_tokens

# Word-set Jaccard above which two items say the same thing (overlapping chunks repeat items).
DUPLICATE_SIMILARITY = 0.8
# Share of the shorter text's words a merged item must share with its closest source items
# to inherit their turns when the model dropped them.
RECOVERY_SIMILARITY = 0.6


def notes_json(notes: Notes) -> str:
    return json.dumps(notes, ensure_ascii=False)


def empty_notes(topic: str = "") -> Notes:
    return Notes(topic=topic, core_questions=[], key_insights=[], important_conclusions=[])


def clean_notes(value: dict[str, Any]) -> Notes:
    """Schema-shaped notes without blank items, each item's turns sorted and unique."""
    notes = empty_notes(str(value.get("topic") or "").strip())
    for section in NOTE_SECTIONS:
        notes[section] = [
            NoteItem(text=item["text"].strip(), turns=sorted(set(item["turns"])))
            for item in value.get(section) or []
            if item["text"].strip()
        ]
    return notes


def _items(notes_list: Iterable[Notes]) -> Iterable[NoteItem]:
    return (item for notes in notes_list for section in NOTE_SECTIONS for item in notes[section])


def _with_turns(notes: Notes, turns_of: Callable[[NoteItem], list[int]]) -> Notes:
    """A copy of ``notes`` whose items' turns are ``turns_of(item)``."""
    copy = empty_notes(notes["topic"])
    for section in NOTE_SECTIONS:
        copy[section] = [NoteItem(text=i["text"], turns=turns_of(i)) for i in notes[section]]
    return copy


def cite_within(notes: Notes, allowed: set[int], fallback: list[int]) -> Notes:
    """Citations outside ``allowed`` dropped; an item left without any cites ``fallback``."""
    return _with_turns(notes, lambda item: sorted(allowed.intersection(item["turns"])) or fallback)


def recover_citations(merged: Notes, sources: Sequence[Notes]) -> Notes:
    """Merged notes citing only their sources' turns; items the model left without (valid)
    turns take those of the source items they resemble, else every turn of the sources."""
    source_items = [(_words(item["text"]), item["turns"]) for item in _items(sources)]
    allowed = {turn for _, turns in source_items for turn in turns}

    def turns_of(item: NoteItem) -> list[int]:
        valid = sorted(allowed.intersection(item["turns"]))
        if valid:
            return valid
        words = _words(item["text"])
        scored = [(_containment(words, source), turns) for source, turns in source_items]
        best = max((score for score, _ in scored), default=0.0)
        if best < RECOVERY_SIMILARITY:
            return sorted(allowed)
        return sorted({turn for score, turns in scored if score == best for turn in turns})

    return _with_turns(merged, turns_of)


def _words(text: str) -> frozenset[str]:
    return frozenset(re.findall(r"\w+", text.lower()))


def _containment(left: frozenset[str], right: frozenset[str]) -> float:
    smaller = min(len(left), len(right))
    return len(left & right) / smaller if smaller else 0.0


def is_repeat(left: frozenset[str], right: frozenset[str]) -> bool:
    union = left | right
    return bool(union) and len(left & right) / len(union) >= DUPLICATE_SIMILARITY


def merge_repeats(level: Sequence[Notes]) -> list[Notes]:
    """``level`` with items repeating an earlier item (same section, similar words) removed
    and their turns added to the earlier one. Deterministic: first occurrence wins."""
    kept_by: dict[str, list[tuple[frozenset[str], NoteItem]]] = {s: [] for s in NOTE_SECTIONS}
    merged: list[Notes] = []
    for notes in level:
        unique = empty_notes(notes["topic"])
        for section in NOTE_SECTIONS:
            for item in notes[section]:
                words = _words(item["text"])
                twin = next((kept for w, kept in kept_by[section] if is_repeat(w, words)), None)
                if twin is not None:
                    twin["turns"] = sorted({*twin["turns"], *item["turns"]})
                    continue
                copy = NoteItem(text=item["text"], turns=list(item["turns"]))
                kept_by[section].append((words, copy))
                unique[section].append(copy)
        merged.append(unique)
    return merged


def combine_notes(sources: Sequence[Notes]) -> Notes:
    """All of ``sources`` in one notes object, repeats merged."""
    topics = list(dict.fromkeys(notes["topic"] for notes in sources if notes["topic"]))
    combined = empty_notes("; ".join(topics))
    for notes in merge_repeats(sources):
        for section in NOTE_SECTIONS:
            combined[section].extend(notes[section])
    return combined


def notes_tokens(notes: Notes) -> int:
    return count_tokens(notes_json(notes))


def group_for_budget(level: Sequence[Notes], budget_tokens: int) -> list[list[Notes]]:
    """One group when ``level`` fits the budget; else consecutive groups filled up to it.

    Each group holds at least two notes objects, so every collapse round at least halves
    their number; a group may exceed the budget rather than cut a notes object.
    """
    sizes = [notes_tokens(notes) for notes in level]
    if sum(sizes) <= budget_tokens:
        return [list(level)]
    groups: list[list[Notes]] = []
    current: list[Notes] = []
    current_tokens = 0
    for notes, tokens in zip(level, sizes, strict=True):
        if len(current) >= 2 and current_tokens + tokens > budget_tokens:
            groups.append(current)
            current, current_tokens = [], 0
        current.append(notes)
        current_tokens += tokens
    if len(current) == 1 and groups:
        groups[-1].extend(current)
    else:
        groups.append(current)
    return groups
