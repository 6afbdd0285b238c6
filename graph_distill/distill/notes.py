"""Working with notes: cleaning, keeping citations valid, merging repeats, grouping for the
reduce budget.

An item whose turns the distiller supplied itself, because the model cited none that were valid,
says so in ``cited`` (``CITED_KEY``): ``"filled"`` when it got every turn it could have cited
(its whole chunk, or every turn of the notes it was merged from), ``"inherited"`` when it took
the turns of the model-cited source items its words match. Items without the key carry the
model's own citations. Reports count marked items as uncited.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from graph_distill.distill.state import NOTE_SECTIONS, CitedBy, NoteItem, Notes
from graph_distill.llm.tokens import count_tokens

# Word-set Jaccard above which two items say the same thing (overlapping chunks repeat items).
DUPLICATE_SIMILARITY = 0.8
# Share of the shorter text's words a merged item must share with its closest source items
# to inherit their turns when the model dropped them.
RECOVERY_SIMILARITY = 0.6
CITED_KEY = "cited"
FILLED: CitedBy = "filled"
INHERITED: CitedBy = "inherited"


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


def model_cited(item: NoteItem) -> bool:
    """Whether the item's turns are the model's own citations (not supplied by the distiller)."""
    return CITED_KEY not in item


def _item(text: str, turns: list[int], cited: CitedBy | None) -> NoteItem:
    item = NoteItem(text=text, turns=turns)
    if cited is not None:
        item[CITED_KEY] = cited
    return item


def _with_turns(
    notes: Notes, turns_of: Callable[[NoteItem], tuple[list[int], CitedBy | None]]
) -> Notes:
    """A copy of ``notes`` whose items' turns and mark are ``turns_of(item)``."""
    copy = empty_notes(notes["topic"])
    for section in NOTE_SECTIONS:
        copy[section] = [_item(i["text"], *turns_of(i)) for i in notes[section]]
    return copy


def cite_within(notes: Notes, allowed: set[int], fallback: list[int]) -> Notes:
    """Citations outside ``allowed`` dropped; an item left without any cites ``fallback``
    (marked filled)."""

    def turns_of(item: NoteItem) -> tuple[list[int], CitedBy | None]:
        valid = sorted(allowed.intersection(item["turns"]))
        return (valid, item.get(CITED_KEY)) if valid else (list(fallback), FILLED)

    return _with_turns(notes, turns_of)


def recover_citations(merged: Notes, sources: Sequence[Notes]) -> Notes:
    """Merged notes citing only their sources' turns; items the model left without (valid)
    turns take those of the source items they resemble (marked inherited, or filled when those
    were filled), else every turn of the sources (marked filled)."""
    source_items = [(_words(i["text"]), i["turns"], i.get(CITED_KEY)) for i in _items(sources)]
    allowed = {turn for _, turns, _ in source_items for turn in turns}

    def turns_of(item: NoteItem) -> tuple[list[int], CitedBy | None]:
        valid = sorted(allowed.intersection(item["turns"]))
        if valid:
            return valid, None
        words = _words(item["text"])
        scored = [(_containment(words, w), turns, cited) for w, turns, cited in source_items]
        best = max((score for score, _, _ in scored), default=0.0)
        if best < RECOVERY_SIMILARITY:
            return sorted(allowed), FILLED
        closest = [(turns, cited) for score, turns, cited in scored if score == best]
        mark = FILLED if any(cited == FILLED for _, cited in closest) else INHERITED
        return sorted({turn for turns, _ in closest for turn in turns}), mark

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
                    _absorb(twin, item)
                    continue
                copy = _item(item["text"], list(item["turns"]), item.get(CITED_KEY))
                kept_by[section].append((words, copy))
                unique[section].append(copy)
        merged.append(unique)
    return merged


def _absorb(twin: NoteItem, item: NoteItem) -> None:
    """``item``'s turns added to its ``twin``'s; supplied turns never widen model-cited ones."""
    if model_cited(twin) != model_cited(item):
        cited = twin if model_cited(twin) else item
        twin["turns"] = list(cited["turns"])
        twin.pop(CITED_KEY, None)
        return
    twin["turns"] = sorted({*twin["turns"], *item["turns"]})
    if FILLED in (twin.get(CITED_KEY), item.get(CITED_KEY)):
        twin[CITED_KEY] = FILLED


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
