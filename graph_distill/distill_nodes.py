"""Nodes of the distillation graph, and the notes they pass around.

Notes cite the conversation: every item carries the indices of the messages ("turns") it came
from. Chunk notes may cite only their chunk's turns; merged notes keep their sources' turns.
"""

from __future__ import annotations

import json
import logging
import operator
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langgraph.runtime import Runtime
from langgraph.types import Send
from typing_extensions import TypedDict

from graph_distill.context import DistillContext
from graph_distill.models import chat_model
from graph_distill.prompting import render_prompt
from graph_distill.splitting import Chunk, split_conversation
from graph_distill.structured import OutputSpec, StructuredReply, ainvoke_structured
from graph_distill.tokens import count_tokens
from graph_distill.usage import Usage, add_usage, empty_usage

logger = logging.getLogger(__name__)

NOTE_SECTIONS = ("core_questions", "key_insights", "important_conclusions")
# Word-set Jaccard above which two items say the same thing (overlapping chunks repeat items).
DUPLICATE_SIMILARITY = 0.8
# Share of the shorter text's words a merged item must share with its closest source items
# to inherit their turns when the model dropped them.
RECOVERY_SIMILARITY = 0.6

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
_SCHEMA_TEXT = json.dumps(NOTES_SCHEMA, indent=2)


class NoteItem(TypedDict):
    text: str
    turns: list[int]


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


# ---------------------------------------------------------------- nodes and routes


def split(state: DistillState, runtime: Runtime[DistillContext]) -> dict[str, Any]:
    ctx = _context(runtime)
    chunks = split_conversation(
        state["conversation"],
        ctx.split_method,
        max_tokens=ctx.max_tokens,
        overlap_tokens=ctx.overlap_tokens,
        max_turns=ctx.max_turns,
    )
    return {"chunks": [_chunk_data(chunk) for chunk in chunks], "distill_usage": empty_usage()}


def route_chunks(state: DistillState) -> list[Send] | Literal["plan_reduce"]:
    """One task per chunk (the map); straight on when there is nothing to distill."""
    sends = [Send("distill_chunk", ChunkTask(chunk=chunk)) for chunk in state["chunks"]]
    return sends or "plan_reduce"


async def distill_chunk(task: ChunkTask, runtime: Runtime[DistillContext]) -> dict[str, Any]:
    chunk = task["chunk"]
    reply = await ainvoke_structured(_model(_context(runtime)), chunk_prompt(chunk), NOTES_SPEC)
    return {"chunk_notes": [distilled_chunk(chunk, reply)], "distill_usage": reply.usage}


def plan_reduce(state: DistillState, runtime: Runtime[DistillContext]) -> dict[str, Any]:
    """The notes to merge next (repeats merged), grouped to fit the notes budget."""
    reduce_round, level = _latest_level(state)
    level = merge_repeats(level)
    groups = group_for_budget(level, _context(runtime).notes_budget_tokens)
    return {"notes_level": level, "notes_groups": groups, "reduce_round": reduce_round}


def route_reduce(state: DistillState) -> list[Send] | Literal["reduce"]:
    """Collapse the groups (another round) while the notes need more than one merge call."""
    groups = state["notes_groups"]
    if len(groups) < 2:
        return "reduce"
    next_round = state["reduce_round"] + 1
    return [
        Send("collapse_group", CollapseTask(group=group, round=next_round, index=index))
        for index, group in enumerate(groups)
    ]


async def collapse_group(task: CollapseTask, runtime: Runtime[DistillContext]) -> dict[str, Any]:
    notes, usage = await _merge(_context(runtime), "distill_collapse", task["group"])
    collapsed = CollapsedNotes(round=task["round"], index=task["index"], notes=notes)
    return {"collapsed": [collapsed], "distill_usage": usage}


async def reduce(state: DistillState, runtime: Runtime[DistillContext]) -> dict[str, Any]:
    """Final notes and summary. A single notes object (one distilled chunk) is used as is,
    without a call; no notes at all (nothing distilled) give an empty summary."""
    level = state.get("notes_level") or []
    usage = empty_usage()
    if len(level) > 1:
        merged, usage = await _merge(_context(runtime), "distill_reduce", level)
        final = merge_repeats([merged])[0]
    else:
        final = level[0] if level else empty_notes()
    chunks = sorted(state.get("chunk_notes") or [], key=operator.itemgetter("chunk_index"))
    return {
        "distilled_chunks": chunks,
        "final_notes": final,
        "final_summary": render_summary(final) if level else "",
        "distill_usage": usage,
    }


def _context(runtime: Runtime[DistillContext]) -> DistillContext:
    return runtime.context or DistillContext()


def _model(ctx: DistillContext) -> ChatOpenAI:
    temperature, max_tokens = ctx.distill_temperature, ctx.distill_max_output_tokens
    return chat_model(ctx, "distill", temperature=temperature, max_tokens=max_tokens)


def _chunk_data(chunk: Chunk) -> ChunkData:
    return ChunkData(
        index=chunk.index,
        messages=chunk.messages,
        turn_range=list(chunk.turn_range),
        tokens=chunk.tokens,
    )


def _latest_level(state: DistillState) -> tuple[int, list[Notes]]:
    """Notes of the latest collapse round, else of the chunks distilled without error."""
    collapsed = state.get("collapsed") or []
    if not collapsed:
        chunks = sorted(state.get("chunk_notes") or [], key=operator.itemgetter("chunk_index"))
        return 0, [chunk["notes"] for chunk in chunks if chunk["status"] == "ok"]
    latest = max(entry["round"] for entry in collapsed)
    entries = [entry for entry in collapsed if entry["round"] == latest]
    return latest, [entry["notes"] for entry in sorted(entries, key=operator.itemgetter("index"))]


async def _merge(ctx: DistillContext, prompt: str, sources: list[Notes]) -> tuple[Notes, Usage]:
    """One model call merging ``sources``; when it fails, their plain union (nothing lost)."""
    reply = await ainvoke_structured(_model(ctx), merge_prompt(prompt, sources), NOTES_SPEC)
    if reply.value is None:
        logger.warning("merging %d notes failed (%s); using their union", len(sources), reply.error)
        return combine_notes(sources), reply.usage
    return recover_citations(clean_notes(reply.value), sources), reply.usage


# ---------------------------------------------------------------- prompts


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


def notes_json(notes: Notes) -> str:
    return json.dumps(notes, ensure_ascii=False)


# ---------------------------------------------------------------- notes


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


def distilled_chunk(chunk: ChunkData, reply: StructuredReply) -> DistilledChunk:
    """The output record of one chunk: its notes, or the raw reply when there are none."""
    record = DistilledChunk(
        chunk_index=chunk["index"],
        turn_range=list(chunk["turn_range"]),
        original_messages=[{"role": m["role"], "content": m["content"]} for m in chunk["messages"]],
    )
    if reply.value is None:
        return DistilledChunk(
            **record,
            distilled_content=reply.text,
            notes=empty_notes(),
            status="raw",
            error=reply.error or "the reply could not be used",
        )
    turns = sorted({message["turn"] for message in chunk["messages"]})
    notes = cite_within(clean_notes(reply.value), set(turns), turns)
    return DistilledChunk(
        **record, distilled_content=render_chunk_notes(notes), notes=notes, status="ok"
    )


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


# ---------------------------------------------------------------- text layout


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
