"""Upgrade canary: does graph-distill still work on the newest releases of the packages bounded
in pyproject.toml (those whose internals the fast path uses, and LangGraph, whose beta
DeltaChannel the checkpoints rest on)?

    python scripts/upgrade_canary.py [--keep]

Makes a scratch venv, installs the project with those packages at the newest releases pip
serves (ignoring the bounds), then on each path (fast, and stock with GRAPH_DISTILL_STOCK=1)
runs the adapter contract tests and a short pipeline run against the test suite's fake server
(2 conversations of 3 rounds, distilled), and prints one verdict line per path. Exit code 0
when both paths pass. The fast path "passes" also when its check falls back to stock: the run
works, and the verdict says so (the bounds then want a look before they are raised).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOUNDED = ("openai", "langchain-openai", "langchain-core", "langgraph")
# Upgraded with them (not bounded): the saver the checkpoints use.
ALONG = ("langgraph-checkpoint-sqlite",)
CONTRACT_TESTS = (
    "tests/integration/test_fast_client.py",
    "tests/integration/test_request_body.py",
    "tests/integration/test_throttle.py",
    "tests/integration/test_run_store.py",
)
PIPELINE = """
import subprocess, sys, tempfile
from tests.support.fake_openai import FakeOpenAIServer
with FakeOpenAIServer() as fake, tempfile.TemporaryDirectory() as folder:
    done = subprocess.run(
        [sys.executable, "-m", "graph_distill", "run", "-n", "2", "--min-rounds", "3",
         "--max-rounds", "3", "--seed", "1", "--base-url", fake.base_url, "--api-key", "k",
         "-c", folder + "/c", "-d", folder + "/d"],
        capture_output=True, text=True,
    )
    sys.stderr.write(done.stderr)
    sys.exit(done.returncode)
"""


def run(command: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)


def versions(python: str) -> str:
    shown = run([python, "-m", "pip", "show", *BOUNDED, *ALONG]).stdout.splitlines()
    names = [line.split(": ", 1)[1] for line in shown if line.startswith(("Name:", "Version:"))]
    return ", ".join(f"{n} {v}" for n, v in zip(names[::2], names[1::2], strict=True))


def install(venv: Path) -> str:
    """The project (dev extras) with the bounded packages at their newest releases."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    steps = (
        ["-m", "pip", "install", "-q", "-e", ".[dev]"],
        ["-m", "pip", "install", "-q", "--upgrade", *BOUNDED, *ALONG, "openai[aiohttp]"],
    )
    for step in steps:
        done = run([python, *step])
        if done.returncode:
            raise SystemExit(f"canary: pip failed: {done.stderr.strip().splitlines()[-1:]}")
    return python


def verdict(python: str, stock: bool) -> tuple[bool, str]:
    env = {**os.environ, "GRAPH_DISTILL_STOCK": "1" if stock else "0", "PYTHONPATH": str(ROOT)}
    tests = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CONTRACT_TESTS], env)
    summary = (tests.stdout.strip().splitlines() or ["no output"])[-1]
    pipeline = run([python, "-c", PIPELINE], env)
    fell_back = "using the stock model client" in pipeline.stderr
    passed = tests.returncode == 0 and pipeline.returncode == 0
    parts = [f"contract tests: {summary}", f"pipeline run: exit {pipeline.returncode}"]
    if fell_back and not stock:
        parts.append("fast path fell back to stock (see its line above)")
        print(next(line for line in pipeline.stderr.splitlines() if "stock model" in line))
    return passed, "; ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the scratch venv")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="graph-distill-canary-"))
    try:
        python = install(scratch / "venv")
        print(f"canary: newest releases: {versions(python)}")
        results = [(path, *verdict(python, path == "stock")) for path in ("fast", "stock")]
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    for path, passed, detail in results:
        print(f"canary: {path} path {'PASS' if passed else 'FAIL'} ({detail})")
    return 0 if all(passed for _, passed, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
