"""Benchmark: how ``run --server`` grows with Agent Server processes, and what a lost one costs.

One fixed job, ``run -n 32 --min-rounds 8 --max-rounds 8 -j 32`` (distilled, one chunk per
conversation), against 1, 2 and 4 ``langgraph-api`` processes with 2 jobs each on one
PostgreSQL and one Redis (scripts/agent_cluster.py), all calling one fake model server that
answers after a fixed latency. For each: conversations per minute, and span / ideal, where
ideal = waves x one conversation's model time (waves = 32 / (2 x processes); one
conversation's model time = its sequential model calls x the latency).

Then, for each heartbeat given, the same job on 2 processes with one of them killed (``kill
-9``) once a third of the conversations are saved: the time from the kill until the engine
re-queues the lost runs (the survivor's "Swept stale run" log line), and the job's span
against the same job without the kill.

    python bench/bench_server_scale.py [--latency 0.25] [--processes 1,2,4]
        [--heartbeats 2] [--python .venv-pg/bin/python]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph_distill.llm.settings import ENV_NAMES
from scripts.agent_cluster import REPO_ROOT
from tests.support.agent_server import DevServer, pg_cluster_running
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.files import json_files

COUNT, ROUNDS, JOBS_PER_WORKER = 32, 8, 2
SWEPT_LINE = "Swept stale run"


@dataclass
class Job:
    span: float
    calls: int
    # CPU seconds the server processes spent on the job, and the machine's busy cores.
    server_cpu: float = 0.0
    busy_cores: float = 0.0


def cpu_seconds(pids: list[int]) -> float:
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK"), sum(values) / os.sysconf("SC_CLK_TCK")


def run_args(workdir: Path, tag: str, url: str, count: int = COUNT) -> list[str]:
    return [
        "run",
        *("-n", str(count), "--min-rounds", str(ROUNDS), "--max-rounds", str(ROUNDS)),
        *("-j", str(count), "--split-method", "turns", "--max-turns", str(4 * ROUNDS)),
        *("-c", str(workdir / f"{tag}-c"), "-d", str(workdir / f"{tag}-d")),
        *("-q", "--seed", "1", "--server", url),
    ]


def start_cli(args: list[str], workdir: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES.values()}
    return subprocess.Popen(
        [sys.executable, "-m", "graph_distill", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def ended(process: subprocess.Popen[str], began: float, fake: FakeOpenAIServer, calls: int) -> Job:
    _, stderr = process.communicate()
    span = time.perf_counter() - began
    if process.returncode != 0:
        raise SystemExit(f"run failed ({process.returncode}):\n{stderr}")
    return Job(span, fake.calls - calls)


def one_job(servers: list[DevServer], workdir: Path, tag: str) -> Job:
    server, pids = servers[0], [s.process.pid for s in servers if s.process]
    cpu, (busy, total) = cpu_seconds(pids), machine_busy()
    calls, began = server.fake.calls, time.perf_counter()
    job = ended(start_cli(run_args(workdir, tag, server.url), workdir), began, server.fake, calls)
    assert len(json_files(workdir / f"{tag}-d")) == COUNT, "not every conversation distilled"
    job.server_cpu = cpu_seconds(pids) - cpu
    busy_after, total_after = machine_busy()
    job.busy_cores = os.cpu_count() * (busy_after - busy) / (total_after - total)
    return job


def warm(server: DevServer, workdir: Path, tag: str) -> None:
    """Every process imports the graphs and opens its pools before the timed job."""
    ended(start_cli(run_args(workdir, tag, server.url, count=8), workdir), 0.0, server.fake, 0)


def throughput(python: str, fake: FakeOpenAIServer, processes: int, workdir: Path) -> Job:
    folder = workdir / f"p{processes}"
    folder.mkdir()
    with pg_cluster_running(
        folder, [fake] * processes, python, jobs_per_worker=JOBS_PER_WORKER
    ) as servers:
        warm(servers[0], folder, "warm")
        return one_job(servers, folder, "job")


def recovery(
    python: str, fake: FakeOpenAIServer, heartbeat: float, workdir: Path
) -> tuple[float, Job]:
    """(kill -> re-queue seconds, the job with the kill) on 2 processes."""
    folder = workdir / f"h{heartbeat:g}"
    folder.mkdir()
    with pg_cluster_running(
        folder, [fake, fake], python, jobs_per_worker=JOBS_PER_WORKER, heartbeat=heartbeat
    ) as servers:
        first, second = servers
        warm(first, folder, "warm")
        calls, began = fake.calls, time.perf_counter()
        process = start_cli(run_args(folder, "job", first.url), folder)
        while len(json_files(folder / "job-c")) < COUNT // 3:
            time.sleep(0.05)
        second.kill()
        killed = time.perf_counter()
        while SWEPT_LINE not in first.log_path.read_text(errors="replace"):
            if process.poll() is not None:
                break
            time.sleep(0.1)
        requeued = time.perf_counter() - killed
        return requeued, ended(process, began, fake, calls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--heartbeats", default="2", help="LG_BG_JOB_HEARTBEAT values, s")
    parser.add_argument("--python", default=str(REPO_ROOT / ".venv-pg" / "bin" / "python"))
    options = parser.parse_args()
    counts = [int(p) for p in options.processes.split(",") if p]
    heartbeats = [float(h) for h in options.heartbeats.split(",") if h]
    with tempfile.TemporaryDirectory() as temp, FakeOpenAIServer(latency=options.latency) as fake:
        workdir = Path(temp)
        jobs = {}
        for processes in counts:
            jobs[processes] = throughput(options.python, fake, processes, workdir)
            print(f"{processes} process(es): {jobs[processes]}", flush=True)
        lost = {}
        for heartbeat in heartbeats:
            lost[heartbeat] = recovery(options.python, fake, heartbeat, workdir)
            print(f"heartbeat {heartbeat:g} s: {lost[heartbeat]}", flush=True)
    print(
        f"run -n {COUNT} --min-rounds {ROUNDS} --max-rounds {ROUNDS} -j {COUNT} (distilled, one "
        f"chunk each), model latency {options.latency} s, {JOBS_PER_WORKER} jobs per process; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    print(
        "processes  span     conv/min  calls  ideal    span/ideal  speed-up (linear)  "
        f"server CPU  busy cores (of {os.cpu_count()})"
    )
    first_rate = COUNT / jobs[counts[0]].span * 60
    for processes, job in jobs.items():
        per_item = job.calls / COUNT * options.latency
        ideal = math.ceil(COUNT / (JOBS_PER_WORKER * processes)) * per_item
        rate = COUNT / job.span * 60
        print(
            f"{processes:<9}  {job.span:6.1f} s {rate:8.1f}  {job.calls:5}  {ideal:6.1f} s "
            f"{job.span / ideal:10.2f}  {rate / first_rate:.2f} ({processes / counts[0]:g})"
            f"          {job.server_cpu:6.1f} s    {job.busy_cores:.2f}"
        )
    for heartbeat, (requeued, job) in lost.items():
        normal = jobs.get(2)
        versus = f", {job.span - normal.span:+.1f} s against no kill" if normal else ""
        print(
            f"kill -9 of 1 of 2 processes, LG_BG_JOB_HEARTBEAT={heartbeat:g}: runs re-queued "
            f"{requeued:.1f} s after the kill; job span {job.span:.1f} s{versus}"
        )


if __name__ == "__main__":
    main()
