"""``run --server`` and ``distill --server``: the work done as background runs on a real Agent
Server (``langgraph dev``, and ``langgraph-api`` on Postgres + Redis when set up; their model
calls go to a fake model server), the files written
here, a killed CLI re-attached with ``--resume``, and the server's failures named per item."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from graph_distill.cli.main import main
from graph_distill.files.readers import read_conversation
from graph_distill.files.writing import RUN_REPORT_NAME, conversation_file
from graph_distill.run.manifest import db_path, latest_unfinished_run
from graph_distill.run.remote import thread_id
from tests.support.agent_server import (
    SERVER_MODEL,
    SERVER_MODEL_KEY,
    DevServer,
    free_port,
)
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.files import json_files

CLI_KEY = "key-of-the-cli-environment"
SMALL = ["--min-rounds", "2", "--max-rounds", "3", "--split-method", "turns", "--max-turns", "4"]
WAIT_SECONDS = 120.0


@pytest.fixture(params=["agent_server", "pg_agent_server"], ids=["langgraph-dev", "postgres"])
def server(request: pytest.FixtureRequest) -> DevServer:
    """Each test runs on ``langgraph dev`` and on a Postgres-backed server (when set up)."""
    return request.getfixturevalue(request.param)


@pytest.fixture
def local_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    """A model server the CLI's own environment points at: a run on --server must not use it,
    nor send the key of that environment anywhere."""
    with FakeOpenAIServer() as fake:
        monkeypatch.setenv("MIMO_BASE_URL", fake.base_url)
        monkeypatch.setenv("MIMO_API_KEY", CLI_KEY)
        yield fake


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_ids(conversation_dir: Path) -> list[str]:
    with sqlite3.connect(db_path(conversation_dir)) as connection:
        rows = connection.execute("SELECT run_id FROM graph_distill_runs").fetchall()
    return [row[0] for row in rows]


def runs_of(server: DevServer, thread: str) -> list[dict[str, Any]]:
    return list(server.sync_client().runs.list(thread, limit=100))


def all_runs(server: DevServer) -> int:
    client = server.sync_client()
    threads = client.threads.search(limit=1000)
    return sum(len(client.runs.list(t["thread_id"], limit=100)) for t in threads)


def distilled_data(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in json_files(directory)]


def test_run_writes_the_files_of_a_local_run_without_calling_a_model_itself(
    server: DevServer, local_fake: FakeOpenAIServer, tmp_path: Path
) -> None:
    conv, dist = tmp_path / "c", tmp_path / "d"
    args = ["run", "-n", "2", *SMALL, "-c", str(conv), "-d", str(dist), "--server", server.url]
    result = invoke(*args, "--seed", "5")

    assert result.exit_code == 0, result.output
    records = [json.loads(path.read_text()) for path in json_files(conv)]
    assert len(records) == 2
    for path, record in zip(json_files(conv), records, strict=True):
        assert list(record) == list(conversation_file(record))  # the contract's keys, in order
        assert read_conversation(path).messages == record["conversation"]
        assert record["metadata"]["model"] == SERVER_MODEL  # the server's settings decide
        assert record["metadata"]["usage"]["calls"] >= 2 * record["total_rounds"] - 1
    stems = sorted(f"distilled_{path.stem}" for path in json_files(conv))
    assert sorted(path.stem for path in json_files(dist)) == stems
    for data in distilled_data(dist):
        assert data["total_chunks"] == len(data["distilled_chunks"]) >= 1
        assert data["final_summary"].strip()
        assert data["metadata"]["max_turns"] == 4
        assert data["metadata"]["usage"]["calls"] >= 1
    report = json.loads((conv / RUN_REPORT_NAME).read_text())
    assert report["counts"]["written"] == report["counts"]["distilled"] == 2
    assert report["settings"]["server"] == server.url
    assert report["phases"]["total"]["calls"] == sum(
        r["metadata"]["usage"]["calls"] for r in records
    ) + sum(d["metadata"]["usage"]["calls"] for d in distilled_data(dist))
    assert "2 conversation file(s) written" in result.output
    assert "0 failure(s)" in result.output

    assert local_fake.calls == 0
    keys = {headers.get("authorization") for headers in server.fake.request_headers}
    assert keys == {f"Bearer {SERVER_MODEL_KEY}"}
    (run_id,) = run_ids(conv)
    for index in range(2):
        (run,) = runs_of(server, thread_id(run_id, index))
        assert run["status"] == "success"
        context = run["kwargs"]["context"]
        assert context["min_rounds"] == 2
        assert not {"api_key", "base_url", "model"} & set(context)


def test_distill_forwards_given_model_settings_and_a_rerun_reattaches(
    server: DevServer, tmp_path: Path
) -> None:
    conv = tmp_path / "c"
    invoke("run", "-n", "2", *SMALL, "-c", str(conv), "--no-distill", "--server", server.url)
    out = tmp_path / "out"
    args = ["distill", "-i", str(conv), "-b", "-o", str(out), "--server", server.url]
    args += ["--split-method", "turns", "--max-turns", "4", "--model", "other-model"]
    requests_before = len(server.fake.requests)

    first = invoke(*args)

    assert first.exit_code == 0, first.output
    data = distilled_data(out)
    assert len(data) == 2
    assert {d["metadata"]["model"] for d in data} == {"other-model"}
    assert {r["model"] for r in server.fake.requests[requests_before:]} == {"other-model"}

    runs, calls = all_runs(server), server.fake.calls
    for path in json_files(out):
        path.unlink()
    again = invoke(*args)

    assert again.exit_code == 0, again.output
    assert distilled_data(out) == data
    assert (all_runs(server), server.fake.calls) == (runs, calls)


def test_a_killed_run_resumes_by_reattaching_to_its_threads(
    server: DevServer, tmp_path: Path
) -> None:
    conv, dist = tmp_path / "c", tmp_path / "d"
    args = ["run", "-n", "2", "-j", "2", "--min-rounds", "3", "--max-rounds", "3"]
    args += ["-c", str(conv), "-d", str(dist), "-q", "--server", server.url, "--seed", "9"]
    server.fake.latency = 0.3
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "graph_distill", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        run_id = _kill_once_both_runs_started(server, process, conv)
        assert json_files(conv) == []
    finally:
        server.fake.latency = 0.0

    result = invoke(*args, "--resume")

    assert result.exit_code == 0, result.output
    assert len(json_files(conv)) == len(json_files(dist)) == 2
    for index in range(2):
        runs = runs_of(server, thread_id(run_id, index))
        assert [run["status"] for run in runs] == ["success"]  # never run a second time


def _kill_once_both_runs_started(
    server: DevServer, process: subprocess.Popen[bytes], conv: Path
) -> str:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        run = latest_unfinished_run(conv)
        if run and all(_has_run(server, thread_id(run.run_id, i)) for i in range(2)):
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            return run.run_id
        time.sleep(0.05)
    process.kill()
    pytest.fail("the runs did not start on the server")


def _has_run(server: DevServer, thread: str) -> bool:
    try:
        return bool(runs_of(server, thread))
    except Exception:
        return False  # the thread does not exist yet


def test_a_failed_server_run_is_named_and_the_others_go_on(
    server: DevServer, tmp_path: Path
) -> None:
    conv = tmp_path / "c"
    invoke("run", "-n", "2", *SMALL, "-c", str(conv), "--no-distill", "--server", server.url)
    server.fake.enqueue_fault("401")  # the server's key refused for its next model call

    result = invoke(
        *["distill", "-i", str(conv), "-b", "-o", str(tmp_path / "out"), "-j", "1"],
        *["--server", server.url, "--split-method", "turns", "--max-turns", "4"],
    )

    assert result.exit_code == 1, result.output
    assert len(json_files(tmp_path / "out")) == 1
    (failed_line,) = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    assert "the server's run failed" in failed_line
    assert any(path.name in failed_line for path in json_files(conv))


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ([], "cannot reach the server"),
        (["--rpm", "10"], "limit requests on the server"),
        (["--api-key", "k"], "--api-key cannot be used with --server"),
    ],
)
def test_an_unusable_server_gives_one_plain_line_and_exit_2(
    tmp_path: Path, extra: list[str], says: str
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = invoke("run", "-n", "1", "-q", "-c", str(tmp_path / "c"), "--server", url, *extra)

    assert result.exit_code == 2
    (line,) = result.output.splitlines()
    assert line.startswith("error: ") and says in line


def test_a_run_cancelled_on_the_server_is_named_and_resume_finishes_it(
    server: DevServer, tmp_path: Path
) -> None:
    conv, dist = tmp_path / "c", tmp_path / "d"
    args = ["run", "-n", "2", "-j", "2", "--min-rounds", "3", "--max-rounds", "3"]
    args += ["-c", str(conv), "-d", str(dist), "--server", server.url, "--seed", "4"]
    log = tmp_path / "stderr.txt"
    server.fake.latency = 0.3
    try:
        with log.open("w") as stream:
            process = subprocess.Popen(
                [sys.executable, "-m", "graph_distill", *args],
                stdout=subprocess.DEVNULL,
                stderr=stream,
            )
        cancelled = _cancel_first_running(server, conv)
        assert process.wait(WAIT_SECONDS) == 1
    finally:
        server.fake.latency = 0.0
        if process.poll() is None:
            process.kill()

    (failed,) = [line for line in log.read_text().splitlines() if line.startswith("FAILED")]
    assert f"#{cancelled[1] + 1} " in failed and "the server's run was cancelled" in failed
    assert len(json_files(conv)) == len(json_files(dist)) == 1  # the other one went on

    result = invoke(*args, "--resume")

    assert result.exit_code == 0, result.output
    assert len(json_files(conv)) == len(json_files(dist)) == 2
    statuses = [run["status"] for run in runs_of(server, thread_id(*cancelled))]
    assert statuses == ["success", "interrupted"]  # newest first: one more run, no restart


def _cancel_first_running(server: DevServer, conv: Path) -> tuple[str, int]:
    """Cancel the run of the run's first item once it is running; (run id, item index)."""
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        run = latest_unfinished_run(conv)
        thread = thread_id(run.run_id, 0) if run else None
        runs = runs_of(server, thread) if thread and _has_run(server, thread) else []
        if run and runs and runs[0]["status"] == "running":
            server.sync_client().runs.cancel(thread, runs[0]["run_id"])
            return run.run_id, 0
        time.sleep(0.05)
    pytest.fail("the run did not start on the server")
