"""What a run spends, through the command line: the cost table, run_report.json, the token
budget, --rpm and the --price-* flags; and writes the machine refuses (disk full, no directory)."""

from __future__ import annotations

import errno
import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from graph_distill.files.writing import RUN_REPORT_NAME, TEMP_SUFFIX
from graph_distill.llm.usage import USAGE_KEYS, Usage, add_usage, empty_usage
from tests.integration.test_cli import SECRET, invoke, run_args
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.files import json_files
from tests.support.roles import RoleResponder


def usage_sum(directory: Path) -> Usage:
    total = empty_usage()
    for path in json_files(directory):
        total = add_usage(total, json.loads(path.read_text())["metadata"]["usage"])
    return total


def phase_usage(report: Mapping[str, Any], phase: str) -> dict[str, int]:
    return {key: report["phases"][phase][key] for key in USAGE_KEYS}


def report_in(directory: Path) -> dict[str, Any]:
    return json.loads((directory / RUN_REPORT_NAME).read_text())


def test_run_ends_with_a_cost_table_and_a_report_matching_files_and_server(
    tmp_path: Path,
) -> None:
    prices = ("--price-input", "1", "--price-cached", "0.5", "--price-output", "2")
    with FakeOpenAIServer(RoleResponder()) as server:
        result = invoke(*run_args(server, tmp_path, "-n", "3", "--seed", "4", *prices))
        calls, stats = server.calls, server.stats
    assert result.exit_code == 0, result.output
    report = report_in(tmp_path / "conv")
    assert phase_usage(report, "generation") == usage_sum(tmp_path / "conv")
    assert phase_usage(report, "distillation") == usage_sum(tmp_path / "dist")
    total = report["phases"]["total"]
    assert total["calls"] == calls == report["requests"]["sent"]
    assert total["input_tokens"] == stats["prompt_tokens"]
    assert total["output_tokens"] == stats["completion_tokens"]
    assert total["cached_tokens"] == stats["cached_tokens"] > 0
    uncached = stats["prompt_tokens"] - stats["cached_tokens"]
    cost = (uncached * 1 + stats["cached_tokens"] * 0.5 + stats["completion_tokens"] * 2) / 1e6
    assert total["cost_usd"] == pytest.approx(cost, abs=1e-6)
    assert report["counts"]["written"] == report["counts"]["distilled"] == 3
    assert report["settings"]["seed"] == 4 and report["settings"]["budget_tokens"] is None
    assert SECRET not in (tmp_path / "conv" / RUN_REPORT_NAME).read_text()
    table = [line.split() for line in result.output.splitlines()]
    assert ["calls", "input", "tokens", "cached", "output", "tokens", "est.", "cost", "wall",
            "time"] in table  # fmt: skip
    [total_row] = [row for row in table if row[:1] == ["total"]]
    assert total_row[1:3] == [f"{calls:,}", f"{stats['prompt_tokens']:,}"]
    assert "input 1, cached input 0.5, output 2" in result.output
    assert f"Report: {tmp_path / 'conv' / RUN_REPORT_NAME}" in result.output


def test_a_spent_budget_starts_no_new_conversation_and_resume_finishes(tmp_path: Path) -> None:
    with FakeOpenAIServer(RoleResponder()) as server:
        options = ("-n", "4", "-j", "1", "--seed", "8", "--no-distill")
        result = invoke(*run_args(server, tmp_path, *options, "--budget-tokens", "1"))
        assert result.exit_code == 0, result.output
        assert len(json_files(tmp_path / "conv")) == 1
        assert "3 conversation(s) not started: the token budget is spent" in result.output
        report = report_in(tmp_path / "conv")
        assert report["counts"]["not_started_over_budget"] == 3
        assert report["budget"]["limit_tokens"] == 1 and report["budget"]["exhausted"]
        calls_before = server.calls

        resumed = invoke(*run_args(server, tmp_path, *options, "--resume", "-q"))
        assert resumed.exit_code == 0, resumed.output
        conversations = [json.loads(p.read_text()) for p in json_files(tmp_path / "conv")]
        assert len(conversations) == 4 and len({c["id"] for c in conversations}) == 4
        spent = sum(c["metadata"]["usage"]["calls"] for c in conversations)
        assert server.calls == spent  # nothing asked twice, nothing lost
        assert server.calls > calls_before
    assert report_in(tmp_path / "conv")["counts"]["written"] == 3


def test_rpm_spaces_every_request_of_the_run(tmp_path: Path) -> None:
    with FakeOpenAIServer(RoleResponder()) as server:
        options = ("-n", "2", "-j", "2", "--seed", "1", "--no-distill", "-q", "--rpm", "300")
        result = invoke(*run_args(server, tmp_path, *options))
        arrivals = sorted(record.received_at for record in server.records)
    assert result.exit_code == 0, result.output
    assert len(arrivals) >= 6
    # 300 per minute: starts 0.2 s apart, whichever conversation sends them.
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert min(gaps) > 0.15
    assert report_in(tmp_path / "conv")["settings"]["requests_per_minute"] == 300


def test_distill_writes_its_report_beside_the_outputs_and_never_reads_one(
    tmp_path: Path,
) -> None:
    with FakeOpenAIServer(RoleResponder()) as server:
        made = invoke(*run_args(server, tmp_path, "-n", "2", "--seed", "2", "--no-distill", "-q"))
        assert made.exit_code == 0, made.output
        assert (tmp_path / "conv" / RUN_REPORT_NAME).exists()
        out = tmp_path / "notes"
        args = ["distill", "-b", "-i", str(tmp_path / "conv"), "-o", str(out)]
        result = invoke(*args, "--base-url", server.base_url, "--api-key", SECRET)
        calls = server.calls - made_calls(tmp_path)
    assert result.exit_code == 0, result.output
    assert len(json_files(out)) == 2  # the run's report in -i was not taken for a conversation
    report = report_in(out)
    assert phase_usage(report, "distillation") == usage_sum(out)
    assert report["phases"]["distillation"]["calls"] == calls
    assert report["phases"]["generation"]["calls"] == 0
    assert report["counts"]["distilled"] == 2
    assert "est. cost" in result.output


def made_calls(tmp: Path) -> int:
    return report_in(tmp / "conv")["phases"]["total"]["calls"]


@pytest.mark.parametrize("flag", ["-c", "-d"])
def test_a_directory_that_cannot_be_made_is_refused_before_any_call(
    tmp_path: Path, flag: str
) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file where a directory should be")
    with FakeOpenAIServer(RoleResponder()) as server:
        result = invoke(*run_args(server, tmp_path, "-n", "1", flag, str(blocker / "sub")))
        calls = server.calls
    assert result.exit_code == 2
    assert "cannot be written" in result.output and "Traceback" not in result.output
    assert calls == 0


def test_a_full_disk_stops_the_run_cleanly_and_resume_finishes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    options = ("-n", "3", "-j", "3", "--seed", "6")
    with FakeOpenAIServer(RoleResponder()) as server:
        monkeypatch.setattr(os, "fsync", disk_full)
        result = invoke(*run_args(server, tmp_path, *options))
        assert result.exit_code == 2, result.output
        assert "No space left on device" in result.output and "--resume" in result.output
        assert "Traceback" not in result.output
        leftovers = [p for p in tmp_path.rglob("*") if p.name.endswith(TEMP_SUFFIX)]
        assert leftovers == [] and json_files(tmp_path / "conv") == []

        monkeypatch.setattr(os, "fsync", real_fsync)
        resumed = invoke(*run_args(server, tmp_path, *options, "--resume", "-q"))
        assert resumed.exit_code == 0, resumed.output
        generation_calls = (
            server.calls - report_in(tmp_path / "conv")["phases"]["distillation"]["calls"]
        )
    conversations = [json.loads(p.read_text()) for p in json_files(tmp_path / "conv")]
    assert len(conversations) == 3 and len(json_files(tmp_path / "dist")) == 3
    kept = sum(c["metadata"]["usage"]["calls"] for c in conversations)
    # Every call the conversations kept was asked once; at most the call each conversation had
    # in flight when the run stopped was lost (a conversation is at least 4 calls, so one that
    # was finished but not written cannot have been generated again).
    assert kept <= generation_calls <= kept + 3


def test_distill_on_a_full_disk_stops_with_a_plain_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAIServer(RoleResponder()) as server:
        made = invoke(*run_args(server, tmp_path, "-n", "1", "--seed", "3", "--no-distill", "-q"))
        assert made.exit_code == 0, made.output

        def disk_full(descriptor: int) -> None:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", disk_full)
        out = tmp_path / "notes"
        args = ["distill", "-b", "-i", str(tmp_path / "conv"), "-o", str(out)]
        result = invoke(*args, "--base-url", server.base_url, "--api-key", SECRET)
    assert result.exit_code == 2, result.output
    assert (
        "No space left on device" in result.output and "run the same command again" in result.output
    )
    assert "Traceback" not in result.output
    assert list(out.iterdir()) == []  # no distilled file, no report, no temp file
