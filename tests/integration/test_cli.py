"""The command line, end to end against the fake server: files, errors, exit codes."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from graph_distill.cli.common import RUN_GC_THRESHOLDS
from graph_distill.cli.main import main
from tests.support.fake_openai import FakeOpenAIServer, message_text
from tests.support.files import json_files
from tests.support.roles import RoleResponder

NAME = re.compile(r"^[A-Za-z0-9]+_\d{8}_\d{6}(_\d+)?\.json$")
SECRET = "sk-test-SECRET-0123456789"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def run_args(server: FakeOpenAIServer, tmp: Path, *extra: str) -> list[str]:
    return [
        "run",
        "--base-url",
        server.base_url,
        "--api-key",
        SECRET,
        "-c",
        str(tmp / "conv"),
        "-d",
        str(tmp / "dist"),
        "--min-rounds",
        "2",
        "--max-rounds",
        "3",
        *extra,
    ]


def conversations(tmp: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in json_files(tmp / "conv")]


def test_run_no_distill_writes_contract_files_in_a_subprocess(tmp_path: Path) -> None:
    with FakeOpenAIServer(RoleResponder()) as server:
        args = run_args(server, tmp_path, "--no-distill", "-n", "3", "--seed", "11")
        done = subprocess.run(
            [sys.executable, "-m", "graph_distill", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "NO_COLOR": "1"},
        )
    assert done.returncode == 0, done.stderr
    files = json_files(tmp_path / "conv")
    assert len(files) == 3 and all(NAME.match(f.name) for f in files)
    for path in files:
        data = json.loads(path.read_text())
        assert list(data)[:6] == [
            "id",
            "scenario",
            "conversation",
            "total_rounds",
            "created_at",
            "metadata",
        ]
        roles = [m["role"] for m in data["conversation"]]
        assert roles == ["user", "assistant"] * data["total_rounds"]
        assert 2 <= data["total_rounds"] <= 3
        assert path.name.startswith(data["metadata"]["scenario_key"] + "_")
        assert set(data["metadata"]["usage"]) == {
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "calls",
        }
    assert not (tmp_path / "dist").exists()
    assert "3 conversation file(s) written" in done.stderr
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stdout + done.stderr


def test_seed_reproduces_scenarios_targets_and_noise(tmp_path: Path) -> None:
    results = []
    for attempt in ("a", "b"):
        with FakeOpenAIServer(RoleResponder()) as server:
            out = tmp_path / attempt
            result = invoke(
                *run_args(
                    server,
                    out,
                    "--no-distill",
                    "-n",
                    "3",
                    "--seed",
                    "4",
                    "--typo-rate",
                    "0.5",
                    "-q",
                    "-j",
                    "1",
                )
            )
        assert result.exit_code == 0, result.output
        results.append(
            sorted(
                (
                    c["scenario"]["name"],
                    c["metadata"]["target_rounds"],
                    json.dumps(c["metadata"]["noise"]),
                )
                for c in conversations(out)
            )
        )
    assert results[0] == results[1]


def test_key_is_never_written_or_printed(tmp_path: Path) -> None:
    with FakeOpenAIServer(RoleResponder(), require_key=SECRET) as server:
        result = invoke(*run_args(server, tmp_path, "--no-distill", "-n", "2", "--seed", "1"))
        assert server.requests  # the key did reach the server, as a header only
    assert result.exit_code == 0, result.output
    assert SECRET not in result.output
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace")


def test_refused_key_stops_at_once_with_exit_2(tmp_path: Path) -> None:
    with FakeOpenAIServer(RoleResponder(), require_key="another-key") as server:
        result = invoke(*run_args(server, tmp_path, "--no-distill", "-n", "3"))
        calls = server.calls
    assert result.exit_code == 2
    assert "refused the API key" in result.output
    assert SECRET not in result.output and "Traceback" not in result.output
    assert calls <= 3  # one per conversation started at most: no retries
    assert not list(json_files(tmp_path / "conv")) if (tmp_path / "conv").exists() else True


def test_one_failing_conversation_is_reported_and_the_others_are_written(
    tmp_path: Path,
) -> None:
    scenarios = tmp_path / "extra.yaml"
    scenarios.write_text(
        "- key: Doomed\n  name: Doomed\n  description: always fails\n"
        "  user_prompt: FAILME please\n  ai_role: You answer.\n  user_followups: [a, b]\n"
    )
    assistant = RoleResponder()

    def responder(body: dict[str, Any]) -> str:
        doomed = any("FAILME" in message_text(m) for m in body["messages"])
        return "" if doomed else assistant(body)

    with FakeOpenAIServer(responder) as server:
        result = invoke(
            *run_args(
                server,
                tmp_path,
                "--no-distill",
                "-n",
                "6",
                "--seed",
                "3",
                "--scenarios-file",
                str(scenarios),
                "--scenario",
                "Doomed",
                "--scenario",
                "MachineLearning",
                "-q",
            )
        )
    written = conversations(tmp_path)
    assert result.exit_code == 1, result.output
    assert "Failed:" in result.output and "Doomed" in result.output
    assert 0 < len(written) < 6
    assert all(c["scenario"]["name"] == "Machine Learning Basics" for c in written)
    failed = result.output.count("empty message")
    assert failed + len(written) == 6


def test_rate_limit_is_retried_and_the_run_goes_on(tmp_path: Path) -> None:
    with FakeOpenAIServer(RoleResponder()) as server:
        server.enqueue_fault("429", retry_after=0.2)
        server.enqueue_fault("500")
        result = invoke(*run_args(server, tmp_path, "--no-distill", "-n", "1", "--seed", "2", "-q"))
        faults = server.fault_counts
    assert result.exit_code == 0, result.output
    assert faults["429"] == 1 and faults["500"] == 1
    assert len(conversations(tmp_path)) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min-rounds", "5", "--max-rounds", "3"], "--min-rounds"),
        (["-n", "0"], "-n"),
        (["--typo-rate", "1.5"], "--typo-rate"),
        (["--typo-rate", "-0.1"], "--typo-rate"),
        (["--scenario", "NoSuchScenario"], "NoSuchScenario"),
    ],
)
def test_usage_errors_exit_2_without_traceback(args: list[str], message: str) -> None:
    result = invoke("run", "--base-url", "http://127.0.0.1:9/v1", "--no-distill", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_mimo_without_key_names_the_variable() -> None:
    result = invoke("run", "--base-url", "https://api.xiaomimimo.com/v1", "-n", "1")
    assert result.exit_code == 2
    assert "MIMO_API_KEY" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_scenarios_file_errors_are_reported_by_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            [
                {
                    "name": "X",
                    "description": "d",
                    "user_prompt": "",
                    "ai_role": "r",
                    "user_followups": "nope",
                }
            ]
        )
    )
    result = invoke("run", "--base-url", "http://127.0.0.1:9/v1", "--scenarios-file", str(bad))
    assert result.exit_code == 2
    assert "user_prompt" in result.output and "user_followups" in result.output


def test_help_explains_rate_per_user_message() -> None:
    result = invoke("run", "--help")
    assert result.exit_code == 0
    assert "per message" in result.output.replace("\n", " ").lower()
    for option in (
        "--num-conversations",
        "--min-rounds",
        "--max-rounds",
        "--conversation-dir",
        "--distilled-dir",
        "--max-tokens",
        "--overlap-tokens",
        "--api-key",
        "--base-url",
        "--model",
        "--split-method",
        "--max-turns",
        "--scenario",
        "--scenarios-file",
        "--seed",
        "--typo-rate",
        "--concurrency",
        "--no-distill",
        "--quiet",
    ):
        assert option in result.output


def test_scenarios_lists_the_ten() -> None:
    result = invoke("scenarios")
    assert result.exit_code == 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("MachineLearning") and "Machine Learning Basics" in lines[0]


def test_check_ok_and_failures() -> None:
    with FakeOpenAIServer() as server:
        ok = invoke("check", "--base-url", server.base_url, "--api-key", SECRET)
    assert ok.exit_code == 0 and ok.output.startswith("OK:")
    with FakeOpenAIServer(require_key="other") as server:
        refused = invoke("check", "--base-url", server.base_url, "--api-key", SECRET)
    assert refused.exit_code == 2 and "refused the API key" in refused.output
    assert SECRET not in refused.output
    unreachable = invoke("check", "--base-url", "http://127.0.0.1:9/v1", "--api-key", "k")
    assert unreachable.exit_code == 2 and "could not reach the server" in unreachable.output


@pytest.fixture
def default_gc() -> Iterator[None]:
    """The test process's garbage collection as it was, after a command tuned it."""
    thresholds = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


def test_run_and_distill_collect_cycles_rarely(tmp_path: Path, default_gc: None) -> None:
    with FakeOpenAIServer(RoleResponder()) as server:
        ran = invoke(*run_args(server, tmp_path, "--no-distill", "-n", "1", "-q"))
        assert ran.exit_code == 0, ran.output
        assert gc.get_threshold() == RUN_GC_THRESHOLDS and gc.get_freeze_count() > 0
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)
        (conversation,) = json_files(tmp_path / "conv")
        distill_args = ["--base-url", server.base_url, "--api-key", SECRET, "-q"]
        target = ["-i", str(conversation), "-o", str(tmp_path / "d")]
        distilled = invoke("distill", *target, *distill_args)
        assert distilled.exit_code == 0, distilled.output
    assert gc.get_threshold() == RUN_GC_THRESHOLDS and gc.get_freeze_count() > 0
