"""A built wheel (not only an editable install) carries every package, the prompts and the
scenarios, and runs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_imports_and_runs(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path / "dist"), str(REPO_ROOT)],
        check=True,
        timeout=300,
    )  # fmt: skip
    [wheel] = (tmp_path / "dist").glob("graph_distill-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "graph_distill/prompts/distill_chunk.md" in names
    assert "graph_distill/conversation/data/scenarios.json" in names
    packages = {n.split("/")[1] for n in names if n.startswith("graph_distill/") and "/" in n[14:]}
    assert packages >= {"llm", "conversation", "distill", "files", "run", "cli", "prompts"}
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    env = {**os.environ, "PYTHONPATH": str(unpacked)}
    check = (
        "import graph_distill, graph_distill.llm.prompting as p; "
        "from graph_distill import pipeline_graph; "
        f"assert graph_distill.__file__.startswith({str(unpacked)!r}), graph_distill.__file__; "
        "print(len(p.load_prompt('distill_chunk')) > 0, pipeline_graph.name)"
    )
    imported = subprocess.run(
        [sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert imported.stdout.split() == ["True", "pipeline"], imported.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "graph_distill", "scenarios"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0 and "MachineLearning" in listed.stdout
