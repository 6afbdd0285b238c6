"""The viewer's data: one script per conversation beside the page (loaded when opened, since a
page opened from file:// may not fetch files), and the list the page pages through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from graph_distill.distill.notes import CITED_KEY
from graph_distill.distill.state import NOTE_SECTIONS
from graph_distill.report.build import Measured
from graph_distill.report.dataset import Conversation

CONVERSATIONS_DIR = "conversations"
PREVIEW_CHARS = 120


def script_json(data: Any) -> str:
    """JSON safe inside a <script> element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("</", "<\\/").replace("<!--", "<\\u0021--")


class ViewerWriter:
    """Writes each conversation's script as it is measured and keeps its list entry."""

    def __init__(self, out_dir: Path) -> None:
        self.folder = out_dir / CONVERSATIONS_DIR
        self.entries: list[dict[str, Any]] = []

    def __call__(self, conversation: Conversation, measured: Measured) -> None:
        data = conversation_view(conversation, measured)
        if not self.entries:
            self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"c{conversation.number}.js"
        path.write_text(f"GD.receive({conversation.number},{script_json(data)});\n", "utf-8")
        first_user = next((m["content"] for m in conversation.messages if m["role"] == "user"), "")
        citations = measured.citations
        self.entries.append(
            {
                "n": conversation.number,
                "key": conversation.key,
                "id": conversation.id,
                "scenario": conversation.scenario,
                "rounds": conversation.rounds,
                "preview": " ".join(first_user.split())[:PREVIEW_CHARS],
                "noised": len(conversation.noise()),
                "switches": len(conversation.metadata.get("topic_switches") or []),
                "repeating": sum(measured.degenerate_rounds),
                "coverage": None if citations is None else citations.coverage,
            }
        )

    def index(self, degenerate: set[str], duplicates: set[str]) -> list[dict[str, Any]]:
        return [
            {
                **entry,
                "degenerate": entry["key"] in degenerate,
                "duplicate": entry["key"] in duplicates,
            }
            for entry in self.entries
        ]


def conversation_view(conversation: Conversation, measured: Measured) -> dict[str, Any]:
    noise = conversation.noise()
    breaks = {
        int(b["turn"]): b for b in conversation.metadata.get("role_breaks") or [] if "turn" in b
    }
    repeating = _repeating_turns(conversation.messages, measured.degenerate_rounds)
    turns = []
    for turn, message in enumerate(conversation.messages):
        entry: dict[str, Any] = {"role": message["role"], "text": message["content"]}
        if turn in noise:
            entry.update(clean=noise[turn]["clean"], edits=noise[turn].get("edits") or [])
        if turn in breaks:
            entry["role_break"] = str(breaks[turn].get("reason") or "")
        if turn in repeating:
            entry["repeating"] = True
        turns.append(entry)
    distilled = conversation.distilled or {}
    return {
        "key": conversation.key,
        "id": conversation.id,
        "source": conversation.source,
        "scenario": conversation.scenario,
        "termination": conversation.metadata.get("termination_reason"),
        "turns": turns,
        "switches": conversation.metadata.get("topic_switches") or [],
        "chunks": [_chunk_view(chunk) for chunk in distilled.get("distilled_chunks") or []],
        "summary": distilled.get("final_summary"),
        "has_distilled": conversation.distilled is not None,
    }


def _chunk_view(chunk: dict[str, Any]) -> dict[str, Any]:
    notes = chunk.get("notes") or {}
    items = [
        {
            "section": section,
            "text": item.get("text") or "",
            "turns": item.get("turns") or [],
            "cited": item.get(CITED_KEY),
        }
        for section in NOTE_SECTIONS
        for item in notes.get(section) or []
    ]
    view = {
        "index": chunk.get("chunk_index"),
        "range": chunk.get("turn_range"),
        "status": chunk.get("status", "ok"),
        "topic": notes.get("topic") or "",
        "items": items,
    }
    if chunk.get("status") == "raw":
        view["raw"] = chunk.get("distilled_content") or ""
        view["error"] = chunk.get("error") or ""
    return view


def _repeating_turns(messages: list[dict[str, str]], rounds: list[bool]) -> set[int]:
    """The assistant turns that close a round flagged as repeating."""
    closing = [turn for turn, message in enumerate(messages) if message["role"] == "assistant"]
    return {turn for turn, flagged in zip(closing, rounds, strict=False) if flagged}
