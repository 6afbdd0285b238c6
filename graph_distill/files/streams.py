"""Records read one at a time from JSON Lines, a JSON array (parsed incrementally), a single JSON
object or a Parquet file, so that memory does not grow with the input."""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

INPUT_SUFFIXES = (".json", ".jsonl", ".parquet")
ID_FIELDS = ("id", "conversation_id")
PARQUET_COLUMNS = ("conversations", "messages", "conversation")
PARQUET_HINT = "reading Parquet needs pyarrow: pip install 'graph-distill[parquet]'"
_CHUNK_BYTES = 1 << 20
_PARQUET_BATCH_ROWS = 32
_PARQUET_MAGIC = b"PAR1"
_WHITESPACE = " \t\r\n"
# A decode error this close to the end of the text read so far may only mean "read more".
_EDGE_CHARS = 8


class InputError(ValueError):
    """An unusable input file; ``str()`` is one line naming the file and the problem."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = one_line(problem)
        super().__init__(f"{path}: {self.problem}")


class ReaderUnavailable(RuntimeError):
    """The input needs a package that is not installed (one plain line)."""


@dataclass(frozen=True)
class RawRecord:
    """One record as parsed JSON (``value``), or the reason it could not be parsed."""

    path: str
    index: int
    where: str
    value: Any = None
    problem: str | None = None


def is_parquet(path: Path) -> bool:
    if path.suffix.lower() == ".parquet":
        return True
    try:
        with open(path, "rb") as stream:
            return stream.read(4) == _PARQUET_MAGIC
    except OSError:
        return False


def require_reader(path: Path) -> None:
    """ReaderUnavailable when ``path`` cannot be read with what is installed."""
    if not is_parquet(path):
        return
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise ReaderUnavailable(f"{path}: {PARQUET_HINT}") from None


def count_records(path: Path) -> int | None:
    """About how many records ``path`` holds, when that is cheap to know (else None)."""
    try:
        if is_parquet(path):
            import pyarrow.parquet as pq

            return int(pq.ParquetFile(path).metadata.num_rows)
        with open(path, "rb") as stream:
            head = stream.read(_CHUNK_BYTES).lstrip(codecs.BOM_UTF8).lstrip()
            if head.startswith(b"["):
                return None
            newlines, last = head.count(b"\n"), head[-1:]
            while chunk := stream.read(_CHUNK_BYTES):
                newlines, last = newlines + chunk.count(b"\n"), chunk[-1:]
    except (OSError, ImportError, ValueError):
        return None
    return newlines + (last not in (b"", b"\n"))


def raw_records(path: Path, id_field: str | None = None) -> Iterator[RawRecord]:
    """The records of ``path`` in order; InputError when the file as a whole is unusable."""
    source = str(path)
    _check_file(path, source)
    if is_parquet(path):
        yield from _parquet_records(path, source, (id_field,) if id_field else ID_FIELDS)
        return
    try:
        with open(path, "rb") as stream:
            yield from _json_records(stream, source)
    except OSError as error:
        raise InputError(source, f"cannot be read ({error.strerror or error})") from None


def _check_file(path: Path, source: str) -> None:
    if path.is_dir():
        raise InputError(source, "is a directory, not a file")
    if not path.exists():
        raise InputError(source, "no such file")


def _json_records(stream: BinaryIO, source: str) -> Iterator[RawRecord]:
    head = stream.read(_CHUNK_BYTES)
    body = head[len(codecs.BOM_UTF8) :] if head.startswith(codecs.BOM_UTF8) else head
    first = body.lstrip()[:1]
    if not first:
        raise InputError(source, "empty file")
    stream.seek(len(head) - len(body))
    if first == b"[":
        yield from _array_records(stream, source)
    elif first == b"{" and _first_line_is_json(stream):
        yield from _line_records(stream, source)
    else:
        yield RawRecord(source, 0, "record 0", _whole_value(stream, source))


def _first_line_is_json(stream: BinaryIO) -> bool:
    """A complete JSON value on the first line: one record per line. Rewinds the stream."""
    start = stream.tell()
    line = stream.readline()
    while line and not line.strip():
        line = stream.readline()
    stream.seek(start)
    try:
        json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def _line_records(stream: BinaryIO, source: str) -> Iterator[RawRecord]:
    index = 0
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        where = f"line {number}"
        try:
            yield RawRecord(source, index, where, json.loads(line))
        except UnicodeDecodeError as error:
            byte = line[error.start]
            yield RawRecord(source, index, where, problem=f"not UTF-8 text (byte 0x{byte:02x})")
        except json.JSONDecodeError as error:
            problem = f"not valid JSON (column {error.colno}: {error.msg})"
            yield RawRecord(source, index, where, problem=problem)
        index += 1


def _whole_value(stream: BinaryIO, source: str) -> Any:
    data = stream.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        problem = f"not UTF-8 text (invalid byte 0x{data[error.start]:02x} on line {line})"
        raise InputError(source, problem) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}: {error.msg}"
        raise InputError(source, f"not valid JSON ({where})") from None


class _TextWindow:
    """The not yet parsed part of a stream's text, read on demand: memory stays about one
    record (or one read) long."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.text = ""
        self.pos = 0
        self.line = 1
        self.eof = False

    def more(self) -> bool:
        """Read more text; False at the end of the stream. UnicodeDecodeError on bad bytes."""
        if self.eof:
            return False
        data = self.stream.read(max(_CHUNK_BYTES, len(self.text) - self.pos))
        self.eof = not data
        self.text = self.text[self.pos :] + self.decoder.decode(data, final=self.eof)
        self.pos = 0
        return not self.eof or bool(self.text)

    def skip_space(self) -> str:
        """The next character that is not white space ("" at the end)."""
        while True:
            while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
                self.line += self.text[self.pos] == "\n"
                self.pos += 1
            if self.pos < len(self.text):
                return self.text[self.pos]
            if not self.more() or self.pos >= len(self.text):
                return ""

    def advance(self, end: int) -> None:
        self.line += self.text.count("\n", self.pos, end)
        self.pos = end


def _array_records(stream: BinaryIO, source: str) -> Iterator[RawRecord]:
    window = _TextWindow(stream)
    decoder = json.JSONDecoder()
    index = 0
    try:
        window.skip_space()
        window.advance(window.pos + 1)  # the "["
        while True:
            char = window.skip_space()
            if char == "]":
                break
            if index and char != ",":
                yield _cut(source, index, window, "expected ',' or ']'" if char else "")
                return
            if index:
                window.advance(window.pos + 1)
            if not window.skip_space():
                yield _cut(source, index, window, "")
                return
            value = _next_value(window, decoder)
            if value is None:
                yield _cut(source, index, window, "")
                return
            if isinstance(value, json.JSONDecodeError):
                yield _cut(source, index, window, value.msg)
                return
            yield RawRecord(source, index, f"record {index}", value[0])
            index += 1
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        yield _cut(source, index, window, f"not UTF-8 text (byte 0x{byte:02x})")
        return
    if index == 0:
        raise InputError(source, "an empty JSON array, no conversations")


def _next_value(
    window: _TextWindow, decoder: json.JSONDecoder
) -> tuple[Any] | json.JSONDecodeError | None:
    """The value at the window's position; the decode error when it is malformed; None when the
    text ends inside it."""
    while True:
        try:
            value, end = decoder.raw_decode(window.text, window.pos)
        except json.JSONDecodeError as error:
            near_end = error.pos >= len(window.text) - _EDGE_CHARS
            if not (near_end or error.msg.startswith("Unterminated string")):
                return error
            if not window.more():
                return None
            continue
        window.advance(end)
        return (value,)


def _cut(source: str, index: int, window: _TextWindow, reason: str) -> RawRecord:
    """The record where a JSON array stops being readable: the file ends or breaks there."""
    what = f"not valid JSON ({reason})" if reason else "the file ends inside it (truncated)"
    problem = f"{what}; the array is cut at line {window.line}, records after it are not read"
    return RawRecord(source, index, f"record {index}", problem=problem)


def _parquet_records(path: Path, source: str, id_fields: tuple[str, ...]) -> Iterator[RawRecord]:
    require_reader(path)
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as error:
        raise InputError(source, f"not a readable Parquet file ({error})") from None
    names = table.schema_arrow.names
    column = next((name for name in PARQUET_COLUMNS if name in names), None)
    if column is None:
        expected = " or ".join(repr(name) for name in PARQUET_COLUMNS)
        raise InputError(source, f"no {expected} column (columns: {', '.join(names)})")
    columns = [column, *(name for name in id_fields if name in names)]
    index = 0
    for batch in table.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
        for row in batch.to_pylist():
            yield RawRecord(source, index, f"row {index}", row)
            index += 1


def one_line(text: str) -> str:
    return text.replace("\r", "\\r").replace("\n", "\\n")
