"""Writing an export: where its data file and dataset card go, JSON Lines or Parquet written
in one piece (a temp file moved into place), and the card never written over a file."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

DATA_STEM = "train"
CARD_NAME = "README.md"
PARQUET_BATCH_ROWS = 256
_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
PARQUET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("scenario", pa.string()),
        ("rounds", pa.int32()),
        ("termination_reason", pa.string()),
        ("messages", pa.list_(_MESSAGE)),
        ("final_summary", pa.string()),
    ]
)


class EmptyExport(ValueError):
    """No row to write: the file is left as it was."""


@dataclass(frozen=True)
class Target:
    """The data file and the card of an export."""

    data: Path
    card: Path


def target_for(output: Path, export_format: str) -> Target:
    """A directory (existing, or named without a suffix) holds ``train.<ext>`` and ``README.md``;
    a file gets its card beside it as ``<stem>.card.md``."""
    extension = "parquet" if export_format == "parquet" else "jsonl"
    if output.is_dir() or not output.suffix:
        return Target(output / f"{DATA_STEM}.{extension}", output / CARD_NAME)
    return Target(output, output.with_name(f"{output.stem}.card.md"))


@contextmanager
def _replacing(path: Path, mode: str) -> Iterator[IO[Any]]:
    """A temp file beside ``path`` that becomes ``path`` when the block ends without error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temp, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as stream:
            yield stream
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with _replacing(path, "w") as stream:
        for row in rows:
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
        if not count:
            raise EmptyExport(str(path))
    return count


def write_parquet(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with _replacing(path, "wb") as stream, pq.ParquetWriter(stream, PARQUET_SCHEMA) as writer:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == PARQUET_BATCH_ROWS:
                writer.write_table(pa.Table.from_pylist(batch, schema=PARQUET_SCHEMA))
                count, batch = count + len(batch), []
        if not batch and not count:
            raise EmptyExport(str(path))
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=PARQUET_SCHEMA))
            count += len(batch)
    return count


def writer_for(export_format: str) -> Callable[[Path, Iterable[dict[str, Any]]], int]:
    return write_parquet if export_format == "parquet" else write_jsonl


def write_card(path: Path, text: str) -> bool:
    """Write the card unless a file is there already; whether it was written."""
    try:
        with open(path, "x", encoding="utf-8") as stream:
            stream.write(text)
    except FileExistsError:
        return False
    return True
