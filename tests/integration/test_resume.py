"""Durable runs: kill -9 or Ctrl-C in the middle of `run`, then `run --resume`."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from graph_distill.cli.main import main
from graph_distill.context import PipelineContext
from graph_distill.conversation.scenarios import builtin_scenarios
from graph_distill.run.driver import RunPlan, conversation_seed
from graph_distill.run.generation import run_conversations
from graph_distill.run.manifest import DB_NAME, ItemStatus, RunManifest, latest_unfinished_run
from graph_distill.run.progress import Reporter
from tests.support.fake_openai import FakeOpenAIServer, message_text
from tests.support.files import json_files
from tests.support.roles import RoleResponder, role_of

STARTUP_TIMEOUT = 120.0
CHUNK_MARK = "Conversation part: turns"


def run_args(server: FakeOpenAIServer, tmp: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--base-url",
        server.base_url,
        "--api-key",
        "k",
        "-c",
        str(tmp / "conv"),
        "-d",
        str(tmp / "dist"),
        "-q",
        *extra,
    ]


def start(args: list[str], tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    """The run in a subprocess; its stderr goes to a file (a full pipe would stall it)."""
    log = tmp / f"stderr-{time.monotonic_ns()}.txt"
    with log.open("w") as stream:
        process = subprocess.Popen(
            [sys.executable, "-m", "graph_distill", *args],
            stdout=subprocess.DEVNULL,
            stderr=stream,
            text=True,
            env={**os.environ, "NO_COLOR": "1"},
        )
    return process, log


def wait_for(process: subprocess.Popen[str], log: Path, condition: Callable[[], bool]) -> None:
    """Poll until ``condition`` holds while the run is still going (no fixed sleeps)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended too early: {log.read_text()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the run made no progress")
        time.sleep(0.02)


def kill_when(process: subprocess.Popen[str], log: Path, condition: Callable[[], bool]) -> None:
    """SIGKILL the run once ``condition`` holds, checked again with the run stopped (SIGSTOP),
    so that what it saw is exactly what the kill leaves behind."""
    while True:
        wait_for(process, log, condition)
        process.send_signal(signal.SIGSTOP)
        _, status = os.waitpid(process.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), log.read_text()
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return
        process.send_signal(signal.SIGCONT)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def saved(tmp: Path) -> list[dict[str, Any]]:
    folder = tmp / "conv"
    return [json.loads(p.read_text()) for p in json_files(folder)] if folder.exists() else []


def role_calls(server: FakeOpenAIServer, role: str) -> int:
    return sum(role_of(body) == role for body in server.requests)


def rounds_in_progress(server: FakeOpenAIServer, tmp: Path) -> int:
    """Assistant calls made for conversations not saved yet (saved ones made one per round)."""
    return role_calls(server, "assistant") - sum(c["total_rounds"] for c in saved(tmp))


def db_rows(tmp: Path, sql: str, *parameters: Any) -> list[tuple[Any, ...]]:
    connection = sqlite3.connect(tmp / "conv" / DB_NAME)
    try:
        return connection.execute(sql, parameters).fetchall()
    finally:
        connection.close()


def assert_complete(tmp: Path, count: int) -> list[dict[str, Any]]:
    conversations = saved(tmp)
    assert len(conversations) == count
    assert len({c["id"] for c in conversations}) == count
    distilled = sorted(p.name for p in json_files(tmp / "dist"))
    stems = sorted(f"distilled_{p.stem}.json" for p in json_files(tmp / "conv"))
    assert distilled == stems
    assert latest_unfinished_run(tmp / "conv") is None
    assert db_rows(tmp, "SELECT count(*) FROM checkpoints") == [(0,)]  # dropped once complete
    return conversations


def test_killed_run_resumes_where_it_stopped(tmp_path: Path) -> None:
    count, workers = 6, 3
    options = ("-n", str(count), "-j", str(workers), "--seed", "5")
    options += ("--min-rounds", "4", "--max-rounds", "9", "--max-tokens", "400")
    with FakeOpenAIServer(RoleResponder(), latency=0.05) as server:
        process, log = start(run_args(server, tmp_path, *options), tmp_path)
        kill_when(
            process,
            log,
            lambda: (
                len(saved(tmp_path)) >= 1 and rounds_in_progress(server, tmp_path) >= 2 * workers
            ),
        )
        in_progress = rounds_in_progress(server, tmp_path)
        kept = {c["id"] for c in saved(tmp_path)}
        assert 0 < len(kept) < count and latest_unfinished_run(tmp_path / "conv") is not None

        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "graph_distill",
                *run_args(server, tmp_path, *options),
                "--resume",
            ],
            capture_output=True,
            text=True,
            timeout=STARTUP_TIMEOUT,
        )
        assistant_calls = role_calls(server, "assistant")
    assert done.returncode == 0, done.stderr
    conversations = assert_complete(tmp_path, count)
    assert kept <= {c["id"] for c in conversations}
    rounds = sum(c["total_rounds"] for c in conversations)
    # Starting the unfinished conversations over would ask their `in_progress` rounds again;
    # resuming asks again at most the rounds in flight at the kill (one per worker).
    assert in_progress > workers
    assert rounds <= assistant_calls <= rounds + workers


def test_ctrl_c_stops_cleanly_and_resume_finishes(tmp_path: Path) -> None:
    options = ("-n", "4", "-j", "2", "--min-rounds", "3", "--max-rounds", "6", "--seed", "8")
    with FakeOpenAIServer(RoleResponder(), latency=0.05) as server:
        process, log = start(run_args(server, tmp_path, *options), tmp_path)
        wait_for(process, log, lambda: len(saved(tmp_path)) >= 1)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=STARTUP_TIMEOUT) == 130
        message = log.read_text()
        assert "--resume" in message and "Traceback" not in message
        assert len(message.strip().splitlines()) == 1
        assert len(saved(tmp_path)) < 4
        resumed = invoke(*run_args(server, tmp_path, *options, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert_complete(tmp_path, 4)


def test_resume_with_nothing_to_resume_exits_2(tmp_path: Path) -> None:
    options = ("-n", "1", "--min-rounds", "2", "--max-rounds", "2", "--no-distill")
    with FakeOpenAIServer(RoleResponder()) as server:
        nothing = invoke(*run_args(server, tmp_path, *options, "--resume"))
        assert nothing.exit_code == 2 and "nothing to resume" in nothing.output
        assert not (tmp_path / "conv").exists()
        assert invoke(*run_args(server, tmp_path, *options)).exit_code == 0
        finished = invoke(*run_args(server, tmp_path, *options, "--resume"))
    assert finished.exit_code == 2 and "nothing to resume" in finished.output
    assert "Traceback" not in nothing.output + finished.output
    assert len(saved(tmp_path)) == 1


def test_a_new_run_leaves_an_unfinished_run_alone(tmp_path: Path) -> None:
    first = ("-n", "3", "-j", "3", "--min-rounds", "3", "--max-rounds", "8", "--seed", "2")
    with FakeOpenAIServer(RoleResponder(), latency=0.05) as server:
        process, log = start(run_args(server, tmp_path, *first), tmp_path)
        kill_when(
            process,
            log,
            lambda: len(saved(tmp_path)) >= 1 and rounds_in_progress(server, tmp_path) >= 2,
        )
        unfinished = latest_unfinished_run(tmp_path / "conv")
        assert unfinished is not None
        items_sql = "SELECT * FROM graph_distill_run_items WHERE run_id = ? ORDER BY item_index"
        items_before = db_rows(tmp_path, items_sql, unfinished.run_id)
        checkpoints_sql = "SELECT thread_id, checkpoint_id FROM checkpoints ORDER BY thread_id"
        checkpoints_before = db_rows(tmp_path, checkpoints_sql)
        assert checkpoints_before  # conversations in progress were checkpointed
        files_before = len(saved(tmp_path))

        other = ("-n", "2", "--min-rounds", "2", "--max-rounds", "2", "--seed", "3")
        second = invoke(*run_args(server, tmp_path, *other))
        assert second.exit_code == 0, second.output
        assert db_rows(tmp_path, items_sql, unfinished.run_id) == items_before
        assert db_rows(tmp_path, checkpoints_sql) == checkpoints_before
        assert len(saved(tmp_path)) == files_before + 2
        assert latest_unfinished_run(tmp_path / "conv") == unfinished

        resumed = invoke(*run_args(server, tmp_path, *first, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    assert_complete(tmp_path, 5)
    first_ids = {row[2] for row in items_before}
    assert first_ids <= {c["id"] for c in saved(tmp_path)}


def with_option(options: dict[str, str], name: str, value: str) -> list[str]:
    return [item for pair in {**options, name: value}.items() for item in pair]


def test_resume_refuses_other_settings_and_keeps_the_seed(tmp_path: Path) -> None:
    options = {"-n": "3", "--min-rounds": "2", "--max-rounds": "3", "--typo-rate": "0.5"}
    with FakeOpenAIServer(RoleResponder(), require_key="another-key") as server:
        refused = invoke(*run_args(server, tmp_path, *with_option(options, "--seed", "4")))
    assert refused.exit_code == 2 and "refused the API key" in refused.output
    run = latest_unfinished_run(tmp_path / "conv")
    assert run is not None and run.settings["--seed"] == 4
    with FakeOpenAIServer(RoleResponder()) as server:  # another URL: that does not matter
        for name, value, shown in (
            ("-n", "4", "-n/--num-conversations"),
            ("--seed", "5", "--seed"),
            ("--max-rounds", "4", "--max-rounds"),
            ("--typo-rate", "0.1", "--typo-rate"),
            ("--scenario", "ScienceQA", "--scenario"),
            ("--max-tokens", "900", "--max-tokens"),
        ):
            args = run_args(server, tmp_path, *with_option(options, name, value), "--resume")
            result = invoke(*args)
            assert result.exit_code == 2, result.output
            assert f"cannot resume run {run.run_id}" in result.output and shown in result.output
            assert "Traceback" not in result.output
        assert server.calls == 0
        # -j is not a setting that matters; the seed is the run's when left out
        resumed = invoke(*run_args(server, tmp_path, *with_option(options, "-j", "2"), "--resume"))
    assert resumed.exit_code == 0, resumed.output
    conversations = assert_complete(tmp_path, 3)
    assert {c["metadata"]["seed"] for c in conversations} == {
        conversation_seed(4, index) for index in range(3)
    }


def chunk_requests(server: FakeOpenAIServer) -> list[str]:
    """The chunk each distill-chunk request was about (its first line)."""
    texts = [message_text(body["messages"][-1]) for body in server.requests]
    return [text.splitlines()[0] for text in texts if text.startswith(CHUNK_MARK)]


def test_killed_distillation_does_not_ask_finished_chunks_again(tmp_path: Path) -> None:
    workers = 2
    options = ("-n", "1", "-j", str(workers), "--min-rounds", "12", "--max-rounds", "12")
    options += ("--seed", "1", "--max-tokens", "100", "--overlap-tokens", "0")
    with FakeOpenAIServer(RoleResponder(), latency=0.05) as server:
        process, log = start(run_args(server, tmp_path, *options), tmp_path)
        kill_when(process, log, lambda: len(chunk_requests(server)) >= 2 * workers + 2)
        asked_before = len(chunk_requests(server))
        assert len(saved(tmp_path)) == 1 and json_files(tmp_path / "dist") == []
        resumed = invoke(*run_args(server, tmp_path, *options, "--resume"))
        asked = chunk_requests(server)
    assert resumed.exit_code == 0, resumed.output
    assert_complete(tmp_path, 1)
    [distilled] = [json.loads(p.read_text()) for p in json_files(tmp_path / "dist")]
    chunks = distilled["total_chunks"]
    assert len(set(asked)) == chunks > asked_before
    # Starting over would ask the `asked_before` chunks again; resuming asks again at most
    # those in flight at the kill, and those whose notes were still being saved.
    assert len(asked) <= chunks + 2 * workers < chunks + asked_before


class Crash(BaseException):
    """Stands for the process dying at a chosen point."""


def test_crash_between_writing_a_file_and_recording_it_leaves_no_duplicate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RunManifest.set_status

    async def crash_when_saved(self: RunManifest, *args: Any, **kwargs: Any) -> None:
        if args[2] is ItemStatus.SAVED:
            raise Crash
        await original(self, *args, **kwargs)

    with FakeOpenAIServer(RoleResponder()) as server:
        ctx = PipelineContext(
            base_url=server.base_url, api_key="k", model="m", min_rounds=2, max_rounds=2
        )
        plan = RunPlan(
            count=1,
            conversation_dir=tmp_path / "conv",
            distilled_dir=tmp_path / "dist",
            scenarios=builtin_scenarios()[:2],
            seed=3,
            distill=False,
        )
        monkeypatch.setattr(RunManifest, "set_status", crash_when_saved)
        with pytest.raises(Crash):
            asyncio.run(run_conversations(plan, ctx, Reporter()))
        monkeypatch.setattr(RunManifest, "set_status", original)
        [path] = json_files(tmp_path / "conv")
        run = latest_unfinished_run(tmp_path / "conv")
        assert run is not None
        status = "SELECT status, conversation_path FROM graph_distill_run_items"
        assert db_rows(tmp_path, status) == [(ItemStatus.WRITING, str(path))]
        calls = server.calls
        plan.run_id = run.run_id
        summary = asyncio.run(run_conversations(plan, ctx, Reporter()))
        assert server.calls == calls  # the finished conversation was not asked again
    assert list(json_files(tmp_path / "conv")) == [path] == summary.kept
    assert not summary.written and latest_unfinished_run(tmp_path / "conv") is None


def test_resume_while_the_run_is_still_going_is_refused(tmp_path: Path) -> None:
    options = ("-n", "3", "-j", "1", "--min-rounds", "4", "--max-rounds", "6", "--seed", "3")
    with FakeOpenAIServer(RoleResponder(), latency=0.05) as server:
        process, log = start(run_args(server, tmp_path, *options), tmp_path)
        wait_for(process, log, lambda: len(saved(tmp_path)) >= 1)
        # Stopped, the run still holds its lock however long the refused resume takes.
        process.send_signal(signal.SIGSTOP)
        _, status = os.waitpid(process.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), log.read_text()
        refused = invoke(*run_args(server, tmp_path, *options, "--resume"))
        process.send_signal(signal.SIGKILL)
        process.wait()
        resumed = invoke(*run_args(server, tmp_path, *options, "--resume"))
    assert refused.exit_code == 2
    assert f"is being worked on by another graph-distill process (pid {process.pid})" in (
        refused.output
    )
    assert resumed.exit_code == 0, resumed.output
    assert_complete(tmp_path, 3)
    assert not list((tmp_path / "conv").glob("*.lock"))
