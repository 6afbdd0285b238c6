"""The messages sent to the distiller: a chunk to take notes on, or notes to merge."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from graph_distill.distill.notes import notes_json
from graph_distill.distill.state import NOTES_SCHEMA, ChunkData, DistilledChunk, Notes
from graph_distill.llm.prompting import load_prompt, render_prompt
from graph_distill.llm.tokens import truncate_tokens

_SCHEMA_TEXT = json.dumps(NOTES_SCHEMA, indent=2)


def chunk_prompt(chunk: ChunkData) -> list[BaseMessage]:
    first, last = chunk["turn_range"]
    lines = [f"Conversation part: turns {first} to {last}."]
    lines += [f"{_message_label(message)}\n{message['content']}" for message in chunk["messages"]]
    return [
        SystemMessage(render_prompt("distill_chunk", schema=_SCHEMA_TEXT)),
        HumanMessage("\n\n".join(lines)),
    ]


def _message_label(message: dict[str, Any]) -> str:
    part = message.get("part")
    piece = f" (part {part[0]} of {part[1]})" if part else ""
    return f"[turn {message['turn']}] {message['role']}{piece}:"


def merge_prompt(prompt: str, sources: Sequence[Notes]) -> list[BaseMessage]:
    listing = "\n\n".join(
        f"Notes {number} of {len(sources)}:\n{notes_json(notes)}"
        for number, notes in enumerate(sources, start=1)
    )
    return [SystemMessage(render_prompt(prompt, schema=_SCHEMA_TEXT)), HumanMessage(listing)]


def raw_chunk_text(chunk: DistilledChunk, budget_tokens: int) -> str:
    """A chunk's messages as text, cut to about ``budget_tokens`` tokens."""
    text = "\n".join(f"{m['role']}: {m['content']}" for m in chunk["original_messages"])
    return truncate_tokens(text, budget_tokens)


def raw_summary_prompt(text: str) -> list[BaseMessage]:
    return [SystemMessage(load_prompt("distill_raw_summary")), HumanMessage(text)]
