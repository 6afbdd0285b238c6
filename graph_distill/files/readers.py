"""Conversation records: graph-distill, ShareGPT and OpenAI chat, with the roles and ids found
in real datasets. Each record is judged alone: an empty or malformed record never stops the
others (see ``streams`` for the containers they come in)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph_distill.files.streams import (
    ID_FIELDS,
    INPUT_SUFFIXES,
    InputError,
    RawRecord,
    one_line,
    raw_records,
)
from graph_distill.files.writing import RUN_REPORT_NAME, TEMP_SUFFIX

__all__ = [
    "INPUT_SUFFIXES",
    "BadRecord",
    "EmptyRecord",
    "InputError",
    "ReadOptions",
    "Record",
    "SourceConversation",
    "find_inputs",
    "parse_role_map",
    "read_conversation",
    "read_records",
]

FORMATS_EXPECTED = (
    'expected a graph-distill conversation {"conversation": [...]}, '
    'ShareGPT {"conversations": [...]} or OpenAI chat {"messages": [...]}'
)

EMPTY = "no message has text"

ROLES = ("user", "assistant", "system", "tool")

# Speaker names of public datasets (ShareGPT dumps, OpenAI logs, Hugging Face chat sets).
ROLE_ALIASES: Mapping[str, str] = {
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "ai": "assistant",
    "claude": "assistant",
    "gemini": "assistant",
    "function_call": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "ipython": "tool",
    "tool_response": "tool",
}

_MESSAGE_KEYS = ("conversation", "conversations", "messages")
_TEXT_PART_TYPES = ("text", "input_text", "output_text")


class _Problem(ValueError):
    """A problem inside one record; reported with the record's place and id."""


@dataclass(frozen=True)
class ReadOptions:
    role_map: Mapping[str, str] = field(default_factory=dict)
    id_field: str | None = None


@dataclass(frozen=True)
class SourceConversation:
    """A conversation to distill. ``source`` names it in messages (and is the distilled file's
    ``source`` for one of our own files); ``origin`` ({"path", "index", "id"}) is the
    ``source`` of a record taken from a dataset file."""

    source: str
    stem: str
    messages: list[dict[str, str]]
    record: dict[str, Any] | None
    origin: dict[str, Any] | None = None
    # The only record of its file: the file's own name and ``-o FILE.json`` may be used.
    whole_file: bool = True

    @property
    def source_value(self) -> str | dict[str, Any]:
        return self.origin if self.origin is not None else self.source


@dataclass(frozen=True)
class EmptyRecord:
    """A record with no message text: skipped, not failed."""

    source: str
    problem: str = EMPTY


@dataclass(frozen=True)
class BadRecord:
    """A record that cannot be distilled, and why (one line)."""

    source: str
    problem: str


Record = SourceConversation | EmptyRecord | BadRecord


def parse_role_map(pairs: Sequence[str]) -> dict[str, str]:
    """``FROM=TO`` pairs as a mapping; ValueError (one plain line) on a malformed pair."""
    mapping = {}
    for pair in pairs:
        speaker, sep, role = pair.partition("=")
        if not sep or not speaker.strip():
            raise ValueError(f"--role-map {pair!r}: expected FROM=TO, e.g. narrator=assistant")
        if role.strip().lower() not in ROLES:
            raise ValueError(f"--role-map {pair!r}: TO must be one of {', '.join(ROLES)}")
        mapping[speaker.strip().lower()] = role.strip().lower()
    return mapping


def read_records(path: str | Path, options: ReadOptions | None = None) -> Iterator[Record]:
    """Every record of ``path``, one at a time; InputError when the file as a whole is unusable
    (missing, empty, not JSON at all)."""
    options = options or ReadOptions()
    stream = raw_records(Path(path), options.id_field)
    first = next(stream, None)
    if first is None:
        raise InputError(str(path), "no records")
    second = next(stream, None)
    if second is None:
        yield _record(first, options, single=True)
        return
    yield _record(first, options, single=False)
    yield _record(second, options, single=False)
    for raw in stream:
        yield _record(raw, options, single=False)


def read_conversation(path: str | Path) -> SourceConversation:
    """The conversation of a file that holds one (a saved conversation); InputError (one line)
    when it is unusable or holds several."""
    found = None
    for record in read_records(path):
        if not isinstance(record, SourceConversation):
            raise InputError(record.source, record.problem)
        if found is not None:
            raise InputError(str(path), "holds several conversations, expected one")
        found = record
    assert found is not None
    return found


def find_inputs(directory: Path) -> list[Path]:
    """The *.json, *.jsonl and *.parquet files directly in ``directory``, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        problem = "not a directory" if directory.exists() else "no such directory"
        raise InputError(str(directory), problem)
    return sorted((path for path in directory.iterdir() if _is_input(path)), key=lambda p: p.name)


def record_id(value: Any, id_field: str | None) -> str | None:
    if not isinstance(value, dict):
        return None
    for key in (id_field,) if id_field else ID_FIELDS:
        found = value.get(key)
        if found is not None and found != "":
            return str(found)
    return None


def _record(raw: RawRecord, options: ReadOptions, *, single: bool) -> Record:
    place = raw.path if single else f"{raw.path} {raw.where}"
    if raw.problem is not None:
        return BadRecord(place, raw.problem)
    ident = record_id(raw.value, options.id_field)
    label = place + (f" (id {one_line(ident)})" if ident is not None else "")
    try:
        messages, ours = _conversation_from(raw.value, options)
    except _Problem as problem:
        return BadRecord(label, one_line(str(problem)))
    if not messages:
        return EmptyRecord(label)
    record = raw.value if ours else None
    stem = Path(raw.path).stem
    if single:
        # The only record of its file is named after the file, as a conversation file is.
        origin = None if ours else {"path": raw.path, "index": raw.index, "id": ident}
        return SourceConversation(raw.path if ours else label, stem, messages, record, origin)
    name = ident if ident is not None else f"{stem}_{raw.index}"
    origin = {"path": raw.path, "index": raw.index, "id": ident}
    return SourceConversation(label, name, messages, record, origin, whole_file=False)


def _conversation_from(value: Any, options: ReadOptions) -> tuple[list[dict[str, str]], bool]:
    """The record's messages with text (empty ones dropped) and whether it is our format."""
    if not isinstance(value, dict):
        raise _Problem(f"a JSON {_json_type(value)}; {FORMATS_EXPECTED}")
    key = next((key for key in _MESSAGE_KEYS if key in value), None)
    if key is None:
        raise _Problem(f"not a recognised conversation; {FORMATS_EXPECTED}")
    raw = value[key]
    if not isinstance(raw, list):
        raise _Problem(f"{key!r} is a JSON {_json_type(raw)}, expected a list of messages")
    messages = [_message(item, index, options) for index, item in enumerate(raw)]
    return [m for m in messages if m["content"].strip()], key == "conversation"


def _message(item: Any, index: int, options: ReadOptions) -> dict[str, str]:
    if not isinstance(item, dict):
        raise _Problem(f"message at index {index} is a JSON {_json_type(item)}, not an object")
    role_key = "from" if "from" in item else "role"
    content_key = "value" if "value" in item else "content"
    for key in (role_key, content_key):
        if key not in item:
            raise _Problem(f"message at index {index} has no {key!r}")
    role = _role(item[role_key], index, options)
    content = item[content_key]
    if content is None:
        content = ""
    if isinstance(content, list):
        content = _joined_text_parts(content, index)
    if not isinstance(content, str):
        kind = _json_type(content)
        raise _Problem(f"message at index {index}: {content_key!r} is a JSON {kind}, not a string")
    return {"role": role, "content": content}


def _role(speaker: Any, index: int, options: ReadOptions) -> str:
    if isinstance(speaker, str):
        name = speaker.strip().lower()
        role = options.role_map.get(name) or ROLE_ALIASES.get(name)
        if role is not None:
            return role
        hint = f"; add --role-map {name or repr(speaker)}=ROLE (ROLE: {', '.join(ROLES)})"
    else:
        hint = ""
    raise _Problem(f"message at index {index} has unknown role {speaker!r}{hint}")


def _joined_text_parts(parts: list[Any], index: int) -> str:
    """The texts of the text parts; other parts (images, audio) carry no text."""
    texts = []
    for part_index, part in enumerate(parts):
        if isinstance(part, str):
            texts.append(part)
            continue
        if not isinstance(part, dict) or "type" not in part:
            raise _Problem(f"message at index {index}: content part {part_index} has no 'type'")
        if part["type"] not in _TEXT_PART_TYPES:
            continue
        if not isinstance(part.get("text"), str):
            raise _Problem(f"message at index {index}: text part {part_index} has no string 'text'")
        texts.append(part["text"])
    return "\n".join(texts)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _is_input(path: Path) -> bool:
    return (
        path.suffix.lower() in INPUT_SUFFIXES
        and not path.name.startswith(".")
        and path.name != RUN_REPORT_NAME
        and not path.name.endswith(TEMP_SUFFIX)
        and path.is_file()
    )
