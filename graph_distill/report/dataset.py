"""A dataset as the report and the exports see it: each conversation with its distilled file.

All reading goes through here (and through ``files.readers``), so turn indices are those
``distill`` used and citations line up."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph_distill.files.readers import (
    InputError,
    SourceConversation,
    find_inputs,
    read_records,
)
from graph_distill.files.writing import RUN_REPORT_NAME, distilled_path
from graph_distill.report.realism import RealismSide
from graph_distill.report.reference import UserSide

DISTILLED_PREFIX = "distilled_"


class DatasetError(ValueError):
    """An unusable -c/-d/--reference argument; ``str()`` is one plain line."""


@dataclass(frozen=True)
class Conversation:
    """One conversation: its messages as ``distill`` reads them, our file's record when it is
    one of ours, and its distilled file when one was found."""

    number: int
    key: str
    source: str
    messages: list[dict[str, str]]
    record: dict[str, Any] | None
    distilled: dict[str, Any] | None

    @property
    def metadata(self) -> dict[str, Any]:
        return (self.record or {}).get("metadata") or {}

    @property
    def id(self) -> str:
        return str((self.record or {}).get("id") or self.key)

    @property
    def scenario(self) -> str:
        scenario = (self.record or {}).get("scenario")
        if isinstance(scenario, dict) and scenario.get("name"):
            return str(scenario["name"])
        return "(imported)" if self.record is None else "(none)"

    @property
    def scenario_key(self) -> str:
        return str(self.metadata.get("scenario_key") or self.scenario)

    @property
    def rounds(self) -> int:
        return sum(message["role"] == "assistant" for message in self.messages)

    def noise(self) -> dict[int, dict[str, Any]]:
        """Noised turns: turn -> {"clean", "edits"}."""
        return {int(n["turn"]): n for n in self.metadata.get("noise") or [] if "turn" in n}

    def clean_messages(self) -> list[dict[str, str]]:
        """The messages with every noised user turn back to the text before the noise."""
        noise = self.noise()
        return [
            {**message, "content": noise[turn]["clean"]} if turn in noise else message
            for turn, message in enumerate(self.messages)
        ]


@dataclass
class Dataset:
    """Where the conversations and distilled files are; iterate to read them one by one."""

    conversations: Path
    distilled: Path | None = None
    skipped: list[str] = field(default_factory=list)
    _by_source: dict[str, tuple[Path, int | None, int]] | None = None
    _open: tuple[Path, list[Any]] | None = None

    def __post_init__(self) -> None:
        if not self.conversations.exists():
            raise DatasetError(f"-c {self.conversations}: no such file or directory")
        if self.distilled is not None and not self.distilled.exists():
            raise DatasetError(f"-d {self.distilled}: no such file or directory")

    def inputs(self) -> list[Path]:
        if self.conversations.is_file():
            return [self.conversations]
        return find_inputs(self.conversations)

    def __iter__(self) -> Iterator[Conversation]:
        self.skipped.clear()
        sources = conversations_in(self.conversations, self.inputs(), self.skipped, "-c")
        for number, source in enumerate(sources):
            yield self._conversation(number, source)

    def run_reports(self) -> list[dict[str, Any]]:
        """The ``run_report.json`` files beside the conversations and the distilled files."""
        folders = [self.conversations if self.conversations.is_dir() else None]
        if self.distilled is not None:
            folders.append(self.distilled if self.distilled.is_dir() else self.distilled.parent)
        reports = []
        for folder in dict.fromkeys(f for f in folders if f is not None):
            path = folder / RUN_REPORT_NAME
            data = _load_json(path) if path.is_file() else None
            if isinstance(data, dict):
                reports.append({"path": str(path), **data})
        return reports

    def _conversation(self, number: int, source: SourceConversation) -> Conversation:
        return Conversation(
            number=number,
            key=source.stem,
            source=source.source,
            messages=source.messages,
            record=source.record,
            distilled=self._distilled_for(source),
        )

    def _distilled_for(self, source: SourceConversation) -> dict[str, Any] | None:
        if self.distilled is None:
            return None
        if self.distilled.is_dir():
            named = distilled_path(self.distilled, source.stem)
            if named.is_file():
                data = _load_json(named)
                return data if isinstance(data, dict) else None
        found = self._source_index().get(source_key(source.source_value))
        return None if found is None else self._record_at(*found)

    def _record_at(self, path: Path, offset: int | None, position: int) -> dict[str, Any] | None:
        """The record at a JSON Lines file's byte ``offset``, or at ``position`` in a JSON file
        (whose records are asked for in order: kept parsed until the next file)."""
        if offset is not None:
            record = _line_at(path, offset)
        else:
            if self._open is None or self._open[0] != path:
                self._open = (path, _whole_records(path))
            records = self._open[1]
            record = records[position] if position < len(records) else None
        return record if isinstance(record, dict) else None

    def _source_index(self) -> dict[str, tuple[Path, int | None, int]]:
        """source key -> (file, line offset or None, position) over every distilled file; built
        once, one record at a time."""
        if self._by_source is None:
            self._by_source = {}
            for path in self._distilled_files():
                for offset, position, record in _located_records(path):
                    if isinstance(record, dict) and "source" in record:
                        key = source_key(record["source"])
                        self._by_source.setdefault(key, (path, offset, position))
        return self._by_source

    def _distilled_files(self) -> list[Path]:
        assert self.distilled is not None
        if self.distilled.is_file():
            return [self.distilled]
        return [p for p in find_inputs(self.distilled) if p.name.startswith(DISTILLED_PREFIX)]


def source_key(source: Any) -> str:
    """A record's origin, comparable between a conversation and its distilled file wherever the
    command ran: the file's name, plus the record's position in it for imported records
    (``path#n`` today; ``{"path", "index", "id"}`` records compare by their path and index)."""
    if isinstance(source, dict):
        return f"{Path(str(source.get('path', ''))).name}@{source.get('index')}"
    path, _, fragment = str(source).partition("#")
    return f"{Path(path).name}#{fragment}" if fragment else Path(path).name


def conversations_in(
    given: Path, inputs: list[Path], skipped: list[str], flag: str
) -> Iterator[SourceConversation]:
    """The conversations of ``inputs``, one at a time, as ``distill`` reads them. Each record
    that is empty or malformed goes to ``skipped`` (place, id and why) and the rest go on; so
    does a file of a directory that is unusable as a whole. When ``given`` is that file,
    DatasetError (one line)."""
    for path in inputs:
        try:
            for record in read_records(path):
                if isinstance(record, SourceConversation):
                    yield record
                else:
                    skipped.append(f"{record.source}: {record.problem}")
        except InputError as error:
            if not given.is_dir():
                raise DatasetError(f"{flag} {error}") from None
            skipped.append(str(error))


def no_conversations(flag: str, path: Path, skipped: list[str]) -> DatasetError:
    why = f" ({len(skipped):,} record(s) skipped, first: {skipped[0]})" if skipped else ""
    return DatasetError(f"{flag} {path}: no conversations found{why}")


@dataclass(frozen=True)
class Reference:
    """The users of a reference dataset, measured as it was read, and what was skipped."""

    side: UserSide
    conversations: int
    skipped: list[str]
    realism: RealismSide = field(default_factory=RealismSide)


def read_reference(path: Path) -> Reference:
    """The users of a reference dataset (any format ``distill`` reads), one record at a time."""
    if not path.exists():
        raise DatasetError(f"--reference {path}: no such file or directory")
    inputs = find_inputs(path) if path.is_dir() else [path]
    side, realism, skipped, count = UserSide(), RealismSide(), [], 0
    for source in conversations_in(path, inputs, skipped, "--reference"):
        side.add(source.messages)
        realism.add(source.messages)
        count += 1
    if not count:
        raise no_conversations("--reference", path, skipped)
    return Reference(side, count, [f"--reference {line}" for line in skipped], realism)


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def _is_json_lines(path: Path) -> bool:
    """Whether the first line that is not blank is a whole JSON object."""
    try:
        with open(path, "rb") as stream:
            line = next((line for line in stream if line.strip()), b"")
        return isinstance(json.loads(line), dict)
    except (OSError, ValueError):
        return False


def _located_records(path: Path) -> Iterator[tuple[int | None, int, Any]]:
    """(line offset or None, position, record) of each distilled record of a file: JSON Lines
    read line by line, or one JSON object or list."""
    if not _is_json_lines(path):
        for position, record in enumerate(_whole_records(path)):
            yield None, position, record
        return
    offset = 0
    with open(path, "rb") as stream:
        for position, line in enumerate(stream):
            try:
                record = json.loads(line) if line.strip() else None
            except ValueError:
                record = None
            yield offset, position, record
            offset += len(line)


def _line_at(path: Path, offset: int) -> Any:
    try:
        with open(path, "rb") as stream:
            stream.seek(offset)
            return json.loads(stream.readline())
    except (OSError, ValueError):
        return None


def _whole_records(path: Path) -> list[Any]:
    data = _load_json(path)
    if isinstance(data, list):
        return data
    return [] if data is None else [data]
