"""Notes say which citations the distiller supplied itself, and merging never lets a supplied
citation widen one the model gave."""

from __future__ import annotations

from graph_distill.distill.notes import cite_within, merge_repeats, model_cited
from graph_distill.distill.state import NoteItem, Notes


def notes(*items: NoteItem) -> Notes:
    return Notes(topic="t", core_questions=list(items), key_insights=[], important_conclusions=[])


def test_an_item_left_without_citations_is_marked_filled() -> None:
    result = cite_within(
        notes(NoteItem(text="kept", turns=[3, 99]), NoteItem(text="none", turns=[42])),
        allowed={2, 3, 4},
        fallback=[2, 3, 4],
    )
    kept, none = result["core_questions"]
    assert kept == {"text": "kept", "turns": [3]} and model_cited(kept)
    assert none == {"text": "none", "turns": [2, 3, 4], "cited": "filled"}
    assert not model_cited(none)


def test_a_filled_twin_never_widens_a_model_citation() -> None:
    text = "Use an LRU cache for parsed templates"
    filled = NoteItem(text=text, turns=[0, 1, 2, 3], cited="filled")
    given = NoteItem(text=text, turns=[5])
    merged = merge_repeats([notes(filled), notes(given)])
    assert merged[0]["core_questions"] == [{"text": text, "turns": [5]}]


def test_two_model_citations_merge_and_two_filled_stay_filled() -> None:
    text = "Profile before optimising anything"
    merged = merge_repeats(
        [notes(NoteItem(text=text, turns=[1])), notes(NoteItem(text=text, turns=[7]))]
    )
    assert merged[0]["core_questions"] == [{"text": text, "turns": [1, 7]}]
    both_filled = merge_repeats(
        [
            notes(NoteItem(text=text, turns=[1], cited="inherited")),
            notes(NoteItem(text=text, turns=[7], cited="filled")),
        ]
    )
    assert both_filled[0]["core_questions"] == [{"text": text, "turns": [1, 7], "cited": "filled"}]
