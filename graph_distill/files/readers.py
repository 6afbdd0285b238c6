"""Conversation inputs: graph-distill, ShareGPT and OpenAI chat records, as a JSON object, a JSON
list or JSON Lines."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph_distill.files.writing import RUN_REPORT_NAME, TEMP_SUFFIX

INPUT_SUFFIXES = (".json", ".jsonl")


FORMATS_EXPECTED = (
    'expected a graph-distill conversation {"conversation": [...]}, '
    'ShareGPT {"conversations": [...]} or OpenAI chat {"messages": [...]}'
)


class InputError(ValueError):
    """An unusable input file; ``str()`` is one line naming the file and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(_one_line(f"{path}: {problem}"))


class _Problem(ValueError):
    """A problem inside one conversation record; located and wrapped into an InputError."""


@dataclass(frozen=True)
class SourceConversation:
    source: str
    stem: str
    messages: list[dict[str, str]]
    record: dict[str, Any] | None


@dataclass(frozen=True)
class _Format:
    messages_key: str
    role_key: str
    content_key: str
    roles: Mapping[str, str]
    content_parts: bool


_PLAIN_ROLES = {"user": "user", "assistant": "assistant", "system": "system"}


_OURS = _Format("conversation", "role", "content", _PLAIN_ROLES, content_parts=False)


_SHAREGPT = _Format(
    "conversations",
    "from",
    "value",
    {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "system": "system",
    },
    content_parts=False,
)


_OPENAI = _Format("messages", "role", "content", _PLAIN_ROLES, content_parts=True)


_FORMATS = (_OURS, _SHAREGPT, _OPENAI)


def read_conversations(path: str | Path) -> list[SourceConversation]:
    """Every conversation in ``path``; raises InputError (one line) when the file is unusable."""
    source = str(path)
    records = _parse_records(_read_text(Path(path), source), source)
    stem = Path(path).stem
    width = len(str(len(records)))
    conversations = []
    for number, (location, value) in enumerate(records, 1):
        try:
            messages, record = _conversation_from(value)
        except _Problem as problem:
            raise InputError(source, f"{location}{problem}") from None
        if len(records) == 1:
            conversations.append(SourceConversation(source, stem, messages, record))
        else:
            numbered_stem = f"{stem}_{number:0{width}d}"
            conversations.append(
                SourceConversation(f"{source}#{number}", numbered_stem, messages, record)
            )
    return conversations


def find_inputs(directory: Path) -> list[Path]:
    """The *.json and *.jsonl files directly in ``directory``, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        problem = "not a directory" if directory.exists() else "no such directory"
        raise InputError(str(directory), problem)
    return sorted((path for path in directory.iterdir() if _is_input(path)), key=lambda p: p.name)


def _one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _read_text(path: Path, source: str) -> str:
    if path.is_dir():
        raise InputError(source, "is a directory, not a file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(source, "no such file") from None
    except OSError as error:
        raise InputError(source, f"cannot be read ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        problem = f"not UTF-8 text (invalid byte 0x{data[error.start]:02x} on line {line})"
        raise InputError(source, problem) from None
    if not text.strip():
        raise InputError(source, "empty file")
    return text


def _parse_records(text: str, source: str) -> list[tuple[str, Any]]:
    """(location prefix for problems, JSON value) for each conversation record in ``text``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        if _is_json_lines(text, error):
            return _parse_json_lines(text, source)
        where = f"line {error.lineno}, column {error.colno}: {error.msg}"
        raise InputError(source, f"not valid JSON ({where})") from None
    if not isinstance(value, list):
        return [("", value)]
    if not value:
        raise InputError(source, f"an empty JSON array, no conversations; {FORMATS_EXPECTED}")
    return [(f"conversation {number}: ", item) for number, item in enumerate(value, 1)]


def _is_json_lines(text: str, error: json.JSONDecodeError) -> bool:
    """A complete JSON value on the first line, followed by more: one record per line."""
    if error.msg != "Extra data":
        return False
    first_line = next(line for line in text.split("\n") if line.strip())
    try:
        json.loads(first_line)
    except json.JSONDecodeError:
        return False
    return True


def _parse_json_lines(text: str, source: str) -> list[tuple[str, Any]]:
    records = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            records.append((f"line {number}: ", json.loads(line)))
        except json.JSONDecodeError as error:
            where = f"column {error.colno}: {error.msg}"
            raise InputError(source, f"line {number}: not valid JSON ({where})") from None
    return records


def _conversation_from(value: Any) -> tuple[list[dict[str, str]], dict[str, Any] | None]:
    if not isinstance(value, dict):
        raise _Problem(f"a JSON {_json_type(value)}; {FORMATS_EXPECTED}")
    for input_format in _FORMATS:
        if input_format.messages_key in value:
            messages = _messages(value[input_format.messages_key], input_format)
            return messages, value if input_format is _OURS else None
    raise _Problem(f"not a recognised conversation; {FORMATS_EXPECTED}")


def _messages(raw: Any, input_format: _Format) -> list[dict[str, str]]:
    """The non-empty messages; empty ones are dropped as long as one remains."""
    if not isinstance(raw, list):
        key = input_format.messages_key
        raise _Problem(f"{key!r} is a JSON {_json_type(raw)}, expected a list of messages")
    if not raw:
        raise _Problem("no messages")
    messages = [_message(item, index, input_format) for index, item in enumerate(raw)]
    kept = [message for message in messages if message["content"].strip()]
    if not kept:
        raise _Problem("all messages are empty")
    return kept


def _message(item: Any, index: int, input_format: _Format) -> dict[str, str]:
    if not isinstance(item, dict):
        raise _Problem(f"message at index {index} is a JSON {_json_type(item)}, not an object")
    for key in (input_format.role_key, input_format.content_key):
        if key not in item:
            raise _Problem(f"message at index {index} has no {key!r}")
    speaker = item[input_format.role_key]
    role = input_format.roles.get(speaker) if isinstance(speaker, str) else None
    if role is None:
        expected = ", ".join(input_format.roles)
        raise _Problem(
            f"message at index {index} has unknown role {speaker!r} (expected {expected})"
        )
    content = item[input_format.content_key]
    if input_format.content_parts and isinstance(content, list):
        content = _joined_text_parts(content, index)
    if not isinstance(content, str):
        kind = _json_type(content)
        key = input_format.content_key
        raise _Problem(f"message at index {index}: {key!r} is a JSON {kind}, not a string")
    return {"role": role, "content": content}


def _joined_text_parts(parts: list[Any], index: int) -> str:
    """The texts of the {"type": "text"} parts; other parts (images, audio) carry no text."""
    texts = []
    for part_index, part in enumerate(parts):
        if not isinstance(part, dict) or "type" not in part:
            raise _Problem(f"message at index {index}: content part {part_index} has no 'type'")
        if part["type"] != "text":
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
