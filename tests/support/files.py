"""Finding the files a run wrote."""

from __future__ import annotations

from pathlib import Path

from graph_distill.files.writing import RUN_REPORT_NAME


def json_files(directory: Path) -> list[Path]:
    """The conversation or distilled files in ``directory`` (not the run report), by name."""
    return sorted(p for p in Path(directory).glob("*.json") if p.name != RUN_REPORT_NAME)
