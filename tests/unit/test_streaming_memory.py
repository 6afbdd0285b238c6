"""Reading a dataset holds about one record at a time: the memory peak of reading every record
does not grow with the input (figures of the whole command are in bench/bench_datasets.py)."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from graph_distill.files.readers import SourceConversation, read_records

RECORDS = 800


def rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"r{n}",
            "conversations": [
                {"from": "human", "value": f"question {n} " + "word " * 150},
                {"from": "gpt", "value": f"answer {n} " + "text " * 250},
            ],
        }
        for n in range(count)
    ]


def write_jsonl(path: Path, count: int) -> Path:
    with open(path, "w") as stream:
        for row in rows(count):
            stream.write(json.dumps(row) + "\n")
    return path


def write_array(path: Path, count: int) -> Path:
    path.write_text(json.dumps(rows(count), indent=1))
    return path


def write_parquet(path: Path, count: int) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows(count)), path, row_group_size=200)
    return path


def peak_bytes(path: Path) -> tuple[int, int]:
    """(records read, peak traced bytes while reading them all)."""
    tracemalloc.start()
    try:
        count = sum(isinstance(r, SourceConversation) for r in read_records(path))
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("suffix", "writer"),
    [(".jsonl", write_jsonl), (".json", write_array), (".parquet", write_parquet)],
)
def test_peak_memory_does_not_grow_with_the_input(
    tmp_path: Path, suffix: str, writer: Callable[[Path, int], Path]
) -> None:
    small = writer(tmp_path / f"small{suffix}", RECORDS)
    large = writer(tmp_path / f"large{suffix}", RECORDS * 10)
    small_count, small_peak = peak_bytes(small)
    large_count, large_peak = peak_bytes(large)
    assert (small_count, large_count) == (RECORDS, RECORDS * 10)
    assert large.stat().st_size > 8 * small.stat().st_size
    # A tenfold input: the peak stays within 1.5x (a whole-file reader would be ~10x).
    assert large_peak < 1.5 * small_peak, (small_peak, large_peak)
