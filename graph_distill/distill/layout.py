"""Notes as text, in the original distiller's layout, with turn citations."""

from __future__ import annotations

from collections.abc import Sequence

from graph_distill.distill.state import NoteItem, Notes


def turn_label(turns: Sequence[int]) -> str:
    """``turn 4`` or ``turns 3-5, 9``."""
    runs: list[list[int]] = []
    for turn in sorted(set(turns)):
        if runs and turn == runs[-1][-1] + 1:
            runs[-1].append(turn)
        else:
            runs.append([turn])
    spans = [str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs]
    return ("turns " if len(turns) > 1 else "turn ") + ", ".join(spans)


def _item_line(item: NoteItem) -> str:
    return f"{item['text']} ({turn_label(item['turns'])})" if item["turns"] else item["text"]


def _section(title: str, items: Sequence[NoteItem], *, numbered: bool = False) -> str:
    lines = [
        f"{number}. {_item_line(item)}" if numbered else f"- {_item_line(item)}"
        for number, item in enumerate(items, start=1)
    ]
    return f"{title}:\n" + "\n".join(lines or ["- (none)"])


def render_chunk_notes(notes: Notes) -> str:
    """The original distiller's per-chunk layout."""
    return "\n\n".join(
        [
            f"Conversation Topic: {notes['topic']}",
            _section("Core Questions", notes["core_questions"]),
            _section("Key Insights", notes["key_insights"]),
            _section("Important Conclusions", notes["important_conclusions"]),
        ]
    )


def render_summary(notes: Notes) -> str:
    """The original distiller's final-summary layout."""
    insights = [*notes["key_insights"], *notes["important_conclusions"]]
    return "\n\n".join(
        [
            f"Overall Conversation Topic: {notes['topic']}",
            _section("Main Issues Discussed", notes["core_questions"], numbered=True),
            _section("Core Insights and Conclusions", insights),
        ]
    )
