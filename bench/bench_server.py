"""Benchmark: the same ``run`` done by this process and by an Agent Server (``--server``).

``run -n 32 --min-rounds 10 --max-rounds 10 -j J`` twice against a fake model server that
answers after 0.25 s: once locally, once with ``--server`` on ``langgraph dev`` started with
``--n-jobs-per-worker J`` (so the server runs as many items at once as the local run). Prints
both wall times (the CLI process, start to exit) and their ratio; goal: server / local <= 1.3,
i.e. the server's overhead per run stays small next to model time.

    python bench/bench_server.py [-n 32] [-j 8] [--latency 0.25] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph_distill.llm.settings import ENV_NAMES
from tests.support.agent_server import dev_server_running
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.files import json_files

GOAL = 1.3


def run_cli(args: list[str], env: dict[str, str], workdir: Path) -> float:
    """Wall seconds of one ``graph-distill run`` in a fresh process; fails loudly on errors."""
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "graph_distill", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stderr}")
    return wall


def run_args(count: int, concurrency: int, workdir: Path, tag: str) -> list[str]:
    return [
        "run",
        *("-n", str(count), "--min-rounds", "10", "--max-rounds", "10", "-j", str(concurrency)),
        *("-c", str(workdir / f"{tag}-c"), "-d", str(workdir / f"{tag}-d"), "-q", "--seed", "1"),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=32)
    parser.add_argument("-j", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--repeat", type=int, default=1)
    options = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES.values()}
    with tempfile.TemporaryDirectory() as temp, FakeOpenAIServer(latency=options.latency) as fake:
        workdir = Path(temp)
        local_env = {**base_env, "MIMO_BASE_URL": fake.base_url, "MIMO_API_KEY": "bench"}
        server_dir = workdir / "server"
        server_dir.mkdir()
        jobs = ["--n-jobs-per-worker", str(options.j)]
        with dev_server_running(server_dir, fake, jobs) as server:
            run_cli([*run_args(2, 2, workdir, "warm"), "--server", server.url], base_env, workdir)
            local, remote, calls = [], [], []
            for attempt in range(options.repeat):
                before = fake.calls
                local.append(
                    run_cli(
                        run_args(options.n, options.j, workdir, f"l{attempt}"), local_env, workdir
                    )
                )
                calls.append(fake.calls - before)
                before = fake.calls
                args = [
                    *run_args(options.n, options.j, workdir, f"s{attempt}"),
                    "--server",
                    server.url,
                ]
                remote.append(run_cli(args, base_env, workdir))
                calls.append(fake.calls - before)
                files = len(json_files(workdir / f"s{attempt}-d"))
                assert files == options.n, f"{files} distilled files on the server side"
    local_s, remote_s = statistics.median(local), statistics.median(remote)
    print(
        f"run -n {options.n} --min-rounds 10 --max-rounds 10 -j {options.j}, "
        f"model latency {options.latency} s, langgraph dev --n-jobs-per-worker {options.j}"
    )
    print(f"model calls per run: {', '.join(map(str, calls))}")
    print(f"local:    {', '.join(f'{s:.2f}' for s in local)} s (median {local_s:.2f} s)")
    print(f"--server: {', '.join(f'{s:.2f}' for s in remote)} s (median {remote_s:.2f} s)")
    ratio = remote_s / local_s
    verdict = "met" if ratio <= GOAL else "missed"
    print(f"ratio --server / local: {ratio:.2f} (goal <= {GOAL}: {verdict})")


if __name__ == "__main__":
    main()
