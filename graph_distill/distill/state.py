"""What flows through the distillation graph: notes with their citations, chunks, and the
graph's state, input and output.

Notes cite the conversation: every item carries the indices of the messages ("turns") it came
from. Chunk notes may cite only their chunk's turns; merged notes keep their sources' turns.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, NotRequired

from typing_extensions import TypedDict

from graph_distill.llm.structured import OutputSpec
from graph_distill.llm.usage import Usage, add_usage

NOTE_SECTIONS = ("core_questions", "key_insights", "important_conclusions")

_ITEM_SCHEMA = {
    "type": "object",
    "properties": {
        "text": {"type": "string"},
        "turns": {"type": "array", "items": {"type": "integer"}},
    },
    "required": ["text", "turns"],
    "additionalProperties": False,
}
NOTES_SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string"},
        **{section: {"type": "array", "items": _ITEM_SCHEMA} for section in NOTE_SECTIONS},
    },
    "required": ["topic", *NOTE_SECTIONS],
    "additionalProperties": False,
}
NOTES_SPEC = OutputSpec(name="conversation_notes", schema=NOTES_SCHEMA)


CitedBy = Literal["filled", "inherited"]


class NoteItem(TypedDict):
    text: str
    turns: list[int]
    # Present only when the distiller supplied the turns (see distill.notes).
    cited: NotRequired[CitedBy]


class Notes(TypedDict):
    topic: str
    core_questions: list[NoteItem]
    key_insights: list[NoteItem]
    important_conclusions: list[NoteItem]


class ChunkData(TypedDict):
    index: int
    messages: list[dict[str, Any]]
    turn_range: list[int]
    tokens: int


class DistilledChunk(TypedDict, total=False):
    chunk_index: int
    turn_range: list[int]
    original_messages: list[dict[str, str]]
    distilled_content: str
    notes: Notes
    status: Literal["ok", "raw"]
    error: str


class CollapsedNotes(TypedDict):
    round: int
    index: int
    notes: Notes


class ChunkTask(TypedDict):
    chunk: ChunkData


class CollapseTask(TypedDict):
    group: list[Notes]
    round: int
    index: int


class DistillInput(TypedDict):
    conversation: list[dict[str, Any]]


class DistillOutput(TypedDict):
    distilled_chunks: list[DistilledChunk]
    final_summary: str
    final_notes: Notes
    distill_usage: Annotated[Usage, add_usage]


class DistillState(DistillInput, DistillOutput, total=False):
    chunks: list[ChunkData]
    chunk_notes: Annotated[list[DistilledChunk], operator.add]
    collapsed: Annotated[list[CollapsedNotes], operator.add]
    notes_level: list[Notes]
    notes_groups: list[list[Notes]]
    reduce_round: int


class DistillProgress(TypedDict, total=False):
    """A custom stream event (``stream_mode="custom"``): ``chunks`` (how many chunks the
    conversation was split into) or ``chunk_done`` (``index``, ``status`` ``ok`` or ``raw``)."""

    kind: str
    chunks: int
    index: int
    status: str
