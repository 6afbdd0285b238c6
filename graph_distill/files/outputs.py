"""Where distilled records go: one file per record (names made from record ids) or one JSON Lines
file written as records finish, which a later run completes instead of redoing."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from graph_distill.files.writing import distilled_path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_CHARS = 120

RecordKey = tuple[str, int, str | None]


class OutputMismatch(ValueError):
    """An existing output made with other settings (one plain line)."""


def safe_name(text: str) -> str:
    """``text`` as a file name part: letters, digits, '.', '_' and '-' only, never hidden."""
    name = _UNSAFE.sub("_", text).lstrip(".")[:MAX_NAME_CHARS]
    return name or "_"


class OutputNames:
    """Distilled file paths for the records of a run: ``distilled_<safe id>.json``, with the
    record's index added when two records would get the same name."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._taken: set[str] = set()

    def claim(self, stem: str, origin: Mapping[str, Any] | None) -> Path:
        name = safe_name(stem)
        if name in self._taken and origin is not None:
            name = f"{name}_{origin['index']}"
        base, number = name, 2
        while name in self._taken:
            name, number = f"{base}_{number}", number + 1
        self._taken.add(name)
        return distilled_path(self.directory, name)


def record_key(source: str | Mapping[str, Any]) -> RecordKey:
    """What identifies a distilled record across runs: its input file, index and id."""
    if isinstance(source, str):
        return (_absolute(source), 0, None)
    return (_absolute(source["path"]), int(source["index"]), source.get("id"))


def _absolute(path: str) -> str:
    # One string per input file, however many records it holds.
    return sys.intern(str(Path(path).absolute()))


def setting_differences(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
    """``name: was X, now Y`` for each setting of ``wanted`` that ``found`` does not match."""
    return [
        f"{name}: was {found.get(name)!r}, now {value!r}"
        for name, value in wanted.items()
        if found.get(name) != value
    ]


class JsonlOutput:
    """One distilled record per line, appended as each finishes. Opening an existing file
    repairs a line cut short by a killed run, checks the settings it was made with and learns
    which records it holds."""

    def __init__(self, path: Path, settings: Mapping[str, Any], *, force: bool) -> None:
        self.path = Path(path)
        self.done: set[RecordKey] = set()
        self.repaired = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if force or not self.path.exists():
            self.path.write_bytes(b"")
        else:
            self.repaired = _cut_partial_line(self.path)
            self._learn(settings)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def holds(self, source: str | Mapping[str, Any]) -> bool:
        """Whether an earlier run wrote this record (each record is read once per run)."""
        return record_key(source) in self.done

    def append(self, data: Mapping[str, Any]) -> None:
        line = json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n"
        payload = line.encode("utf-8")
        while payload:
            payload = payload[os.write(self._fd, payload) :]

    def close(self) -> None:
        os.close(self._fd)

    def _learn(self, settings: Mapping[str, Any]) -> None:
        first = True
        for record in _lines(self.path):
            if first:
                first = False
                differences = setting_differences(record.get("metadata") or {}, settings)
                if differences:
                    raise OutputMismatch(
                        f"{self.path} was made with other settings ({'; '.join(differences)}): "
                        "use the same settings to complete it, --force to rewrite it, or "
                        "another -o"
                    )
            self.done.add(record_key(record["source"]))


def _lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, "rb") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if "source" not in record:
                    raise ValueError
            except (ValueError, TypeError):
                raise OutputMismatch(
                    f"{path} line {number} is not a distilled record: give another -o, or "
                    "--force to rewrite it"
                ) from None
            yield record


def _cut_partial_line(path: Path) -> bool:
    """Drop an unfinished last line (a run killed while writing it); True when one was cut."""
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb+") as stream:
        stream.seek(size - 1)
        if stream.read(1) == b"\n":
            return False
        end = size
        while end > 0:
            step = min(1 << 16, end)
            stream.seek(end - step)
            block = stream.read(step)
            newline = block.rfind(b"\n")
            if newline >= 0:
                end = end - step + newline + 1
                break
            end -= step
        stream.truncate(end)
    return True
