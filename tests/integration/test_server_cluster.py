"""``--server`` on several Agent Server processes sharing one PostgreSQL and one Redis
(scripts/agent_cluster.py): the work spreads over the processes, a process lost to ``kill -9``
mid-run costs its runs' redo time plus the heartbeat, and a killed command re-attaches without
running anything twice. The command talks to the first process; each process calls a fake
model server of its own, so each fake shows what its process's workers do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from graph_distill.files.readers import read_conversation
from graph_distill.run.manifest import latest_unfinished_run
from graph_distill.run.remote import thread_id
from tests.support.agent_server import DevServer
from tests.support.files import json_files

ROUNDS = ["--min-rounds", "3", "--max-rounds", "3"]
SPLIT = ["--split-method", "turns", "--max-turns", "4"]
# Model time per call while a process is killed: runs are mid-way for a few seconds.
LATENCY = 0.3
# A command that outlives this has hung (recovery takes 2 to 4 one-second heartbeats).
WAIT_SECONDS = 120.0


def start_cli(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as stream:
        return subprocess.Popen(
            [sys.executable, "-m", "graph_distill", *args],
            stdout=stream,
            stderr=subprocess.STDOUT,
        )


def finish(process: subprocess.Popen[bytes], log: Path) -> int:
    """The command's exit code; a failure (and the process killed) when it hangs."""
    try:
        return process.wait(WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the command hung; its output:\n{log.read_text()}")


def run_cli(args: list[str], log: Path) -> int:
    return finish(start_cli(args, log), log)


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def slow(cluster: list[DevServer], latency: float) -> None:
    for server in cluster:
        server.fake.latency = latency


def assert_valid_conversations(conv: Path, count: int) -> list[dict[str, Any]]:
    """``count`` conversation files, each whole: its messages readable, ending on the
    assistant, with the rounds asked for."""
    paths = json_files(conv)
    assert len(paths) == count
    records = []
    for path in paths:
        record = json.loads(path.read_text())
        conversation = read_conversation(path)
        assert conversation.messages == record["conversation"]
        assert record["conversation"][-1]["role"] == "assistant"
        assert record["total_rounds"] == 3
        records.append(record)
    return records


def assert_valid_distilled(out: Path, count: int) -> None:
    paths = json_files(out)
    assert len(paths) == count
    for path in paths:
        data = json.loads(path.read_text())
        assert data["total_chunks"] == len(data["distilled_chunks"]) >= 1
        assert data["final_summary"].strip()


def run_statuses(server: DevServer, run_id: str, count: int) -> list[list[str]]:
    client = server.sync_client()
    return [
        [run["status"] for run in client.runs.list(thread_id(run_id, index), limit=100)]
        for index in range(count)
    ]


def finished_or_resumed(code: int, args: list[str], log: Path) -> None:
    """The command ends whole, or its ``--resume`` does (lost work is never lost data)."""
    if code != 0:
        assert "--resume" in log.read_text()
        code = run_cli([*args, "--resume"], log)
    assert code == 0, log.read_text()


def test_one_run_keeps_both_processes_busy(pg_cluster: list[DevServer], tmp_path: Path) -> None:
    conv, dist = tmp_path / "c", tmp_path / "d"
    first, second = pg_cluster
    slow(pg_cluster, LATENCY)
    args = ["run", "-n", "4", "-j", "4", *ROUNDS, *SPLIT, "-q", "--seed", "3"]
    args += ["-c", str(conv), "-d", str(dist), "--server", first.url]

    assert run_cli(args, tmp_path / "log") == 0, (tmp_path / "log").read_text()

    assert_valid_conversations(conv, 4)
    assert_valid_distilled(dist, 4)
    # 2 jobs per process, 4 runs at once: the second process ran half of them.
    assert first.fake.calls > 0 and second.fake.calls > 0


@pytest.mark.parametrize("graph", ["conversation", "pipeline"])
def test_a_process_killed_mid_run_loses_nothing(
    pg_cluster: list[DevServer], tmp_path: Path, graph: str
) -> None:
    conv, dist, log = tmp_path / "c", tmp_path / "d", tmp_path / "log"
    first, second = pg_cluster
    slow(pg_cluster, LATENCY)
    args = ["run", "-n", "4", "-j", "4", *ROUNDS, *SPLIT, "--seed", "8"]
    args += ["-c", str(conv), "-d", str(dist), "--server", first.url]
    args += ["--no-distill"] if graph == "conversation" else []
    process = start_cli(args, log)
    wait_for(lambda: second.fake.calls >= 2, "the second process's runs are mid-way")
    second.kill()

    finished_or_resumed(finish(process, log), args, log)

    records = assert_valid_conversations(conv, 4)
    if graph == "pipeline":
        assert_valid_distilled(dist, 4)
    assert {r["metadata"]["model"] for r in records} == {"fake-model"}
    # The lost runs were re-queued by the engine and finished on the first process.
    statuses = run_statuses(first, latest_run_id(conv), 4)
    assert all(runs[0] == "success" for runs in statuses)


def latest_run_id(conv: Path) -> str:
    report = json.loads((conv / "run_report.json").read_text())
    return str(report["settings"]["run_id"])


def test_distill_survives_a_killed_process(pg_cluster: list[DevServer], tmp_path: Path) -> None:
    conv, out, log = tmp_path / "c", tmp_path / "out", tmp_path / "log"
    first, second = pg_cluster
    generate = ["run", "-n", "4", "-j", "4", *ROUNDS, "-q", "--no-distill", "--seed", "2"]
    assert run_cli([*generate, "-c", str(conv), "--server", first.url], log) == 0
    slow(pg_cluster, LATENCY)
    before = second.fake.calls
    args = ["distill", "-i", str(conv), "-b", "-o", str(out), "-j", "4", *SPLIT]
    args += ["--server", first.url]
    process = start_cli(args, log)
    wait_for(lambda: second.fake.calls > before, "the second process is distilling")
    second.kill()

    code = finish(process, log)
    if code != 0:  # a plain re-run re-attaches to the same threads
        assert run_cli(args, log) == 0, log.read_text()

    assert_valid_distilled(out, 4)


def test_a_killed_command_reattaches_and_runs_nothing_twice(
    pg_cluster: list[DevServer], tmp_path: Path
) -> None:
    conv, dist, log = tmp_path / "c", tmp_path / "d", tmp_path / "log"
    first, _ = pg_cluster
    slow(pg_cluster, LATENCY)
    args = ["run", "-n", "4", "-j", "4", *ROUNDS, *SPLIT, "-q", "--seed", "6"]
    args += ["-c", str(conv), "-d", str(dist), "--server", first.url]
    process = start_cli(args, log)

    def all_started() -> bool:
        run = latest_unfinished_run(conv)
        try:
            return bool(run) and all(run_statuses(first, run.run_id, 4))
        except Exception:
            return False  # a thread not created yet

    wait_for(all_started, "every run is on the server")
    run_id = latest_unfinished_run(conv).run_id
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    assert run_cli([*args, "--resume"], log) == 0, log.read_text()

    assert_valid_conversations(conv, 4)
    assert_valid_distilled(dist, 4)
    assert run_statuses(first, run_id, 4) == [["success"]] * 4


@pytest.mark.parametrize("pg_cluster", [None], indirect=True, ids=["engine-heartbeat"])
def test_runs_of_a_lost_process_stall_and_are_named_never_waited_on_for_ever(
    pg_cluster: list[DevServer], tmp_path: Path
) -> None:
    """At the engine's 120 s heartbeat a killed process's runs stay "running" for minutes:
    past --server-stall-timeout each is named by its thread, cancelled and re-submitted (the
    re-submitted run waits on the lost worker's heartbeat too), then fails; the command ends
    with the others saved and the --resume hint."""
    conv, log = tmp_path / "c", tmp_path / "log"
    first, second = pg_cluster
    slow(pg_cluster, LATENCY)
    args = ["run", "-n", "4", "-j", "4", *ROUNDS, "--no-distill", "--seed", "8"]
    args += ["-c", str(conv), "--server", first.url, "--server-stall-timeout", "3"]
    process = start_cli(args, log)
    wait_for(lambda: second.fake.calls >= 2, "the second process's runs are mid-way")
    second.kill()

    assert finish(process, log) == 1
    output = log.read_text()
    failed = [line for line in output.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 4 - len(json_files(conv)) >= 1
    assert all("the server's run stalled: " in line and "(thread " in line for line in failed)
    assert output.count("re-submitted from its last checkpoint") == len(failed)
    assert "on the server: " in output and " running (longest " in output
    assert "--resume" in output
    assert_valid_conversations(conv, 4 - len(failed))
