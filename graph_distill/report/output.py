"""``graph-distill report``'s files: ``report.json``, ``index.html`` and the viewer's scripts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from graph_distill.files.writing import write_json_atomic
from graph_distill.report.build import Analysis, analyze
from graph_distill.report.dataset import Dataset, Reference
from graph_distill.report.page import render_page
from graph_distill.report.plots import report_plots
from graph_distill.report.viewer import ViewerWriter

REPORT_JSON = "report.json"
INDEX_HTML = "index.html"


def write_report(
    dataset: Dataset,
    out_dir: Path,
    *,
    reference: Reference | None = None,
    judge: Callable[[Dataset], dict[str, Any]] | None = None,
    workers: int = 1,
) -> Analysis:
    """Measure ``dataset`` and write the report into ``out_dir``; with ``judge``, its figures
    (``judge(dataset)``) go in too."""
    viewer = ViewerWriter(out_dir)
    analysis = analyze(dataset, reference=reference, sink=viewer, workers=workers)
    if judge is not None:
        analysis.figures["judge"] = judge(dataset)
    entries = viewer.index(analysis.degenerate, analysis.near_duplicates)
    write_json_atomic(out_dir / REPORT_JSON, analysis.figures)
    page = render_page(analysis.figures, report_plots(analysis.figures), entries)
    (out_dir / INDEX_HTML).write_text(page, encoding="utf-8")
    return analysis
