"""`graph-distill report` on 1,000 conversations of 60 rounds with their distilled files
(synthesized here, not generated): wall time and peak RSS of the report process, against a
baseline measured in the same run: a process that only reads and parses the same files.

Goal: under 30 s and under 1 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.synthetic import write_dataset

GOAL_SECONDS = 30.0
GOAL_RSS_MB = 1024.0
# Each child prints, as its last line on stderr: its peak RSS (KB), the largest peak RSS of
# its own worker processes (KB), and the CPU seconds of it and its workers.
PEAK = (
    "import resource, sys; own = resource.getrusage(resource.RUSAGE_SELF); "
    "workers = resource.getrusage(resource.RUSAGE_CHILDREN); "
    "print(own.ru_maxrss, workers.ru_maxrss, own.ru_utime + own.ru_stime + workers.ru_utime "
    "+ workers.ru_stime, file=sys.stderr)"
)
READ_ONLY = f"""
import json, sys
from pathlib import Path
for folder in sys.argv[1:]:
    for path in sorted(Path(folder).glob("*.json")):
        json.loads(path.read_text(encoding="utf-8"))
{PEAK}
"""
REPORT = f"""
import sys
from graph_distill.cli.main import main
try:
    main(sys.argv[1:])
except SystemExit as stop:
    if stop.code:
        raise
{PEAK}
"""


def timed_child(code: str, *args: str) -> tuple[float, float, float, float]:
    """Wall seconds, CPU seconds, peak RSS (MB) and the largest worker's peak RSS (MB) of one
    child process running ``code``."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    seconds = time.perf_counter() - began
    peak_kb, worker_kb, cpu = done.stderr.strip().splitlines()[-1].split()
    return seconds, float(cpu), int(peak_kb) / 1024, int(worker_kb) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=60)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        began = time.perf_counter()
        conversations, distilled = write_dataset(root, options.conversations, options.rounds)
        size_mb = sum(p.stat().st_size for p in root.rglob("*.json")) / 2**20
        print(
            f"synthesized {options.conversations:,} conversations x {options.rounds} rounds and "
            f"their distilled files: {size_mb:,.0f} MB in {time.perf_counter() - began:.1f} s"
        )
        load = os.getloadavg()[0]
        read_s, read_cpu, read_mb, _ = timed_child(READ_ONLY, str(conversations), str(distilled))
        out = root / "report"
        report_s, report_cpu, report_mb, worker_mb = timed_child(
            REPORT, "report", "-q", "-c", str(conversations), "-d", str(distilled), "-o", str(out)
        )
        page_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"load average before the runs: {load:.1f} on {os.cpu_count()} CPUs")
    print(
        f"baseline (read and parse the files): {read_s:.1f} s ({read_cpu:.1f} s CPU), "
        f"peak RSS {read_mb:,.0f} MB"
    )
    workers = os.cpu_count() or 1
    # Forked workers share pages with the main process: counting them whole overstates.
    total_mb = report_mb + (workers * worker_mb if workers > 1 else 0)
    print(
        f"report: {report_s:.1f} s ({report_cpu:.1f} s CPU, {workers} worker processes), "
        f"peak RSS {report_mb:,.0f} MB + {worker_mb:,.0f} MB per worker "
        f"(at most {total_mb:,.0f} MB in all), output {page_mb:,.0f} MB"
    )
    print(
        f"ratio to baseline: time {report_s / read_s:.2f} (CPU {report_cpu / read_cpu:.2f}), "
        f"memory {total_mb / read_mb:.2f}"
    )
    time_goal = "met" if report_s < GOAL_SECONDS else "missed"
    memory_goal = "met" if total_mb < GOAL_RSS_MB else "missed"
    print(
        f"goal: under {GOAL_SECONDS:.0f} s ({time_goal}), under {GOAL_RSS_MB:,.0f} MB "
        f"({memory_goal})"
    )


if __name__ == "__main__":
    main()
