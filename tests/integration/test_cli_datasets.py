"""`graph-distill distill` on datasets as they are found: per-record errors, roles, ids, JSON
Lines output that a re-run (even after kill -9) completes, Parquet and truncated arrays."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from graph_distill.cli.terminal import RecordBar
from tests.integration.test_cli_distill import invoke
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.files import json_files

ROOT = Path(__file__).resolve().parents[2]


def chat(*turns: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {**extra, "conversations": [{"from": s, "value": v} for s, v in turns]}


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


WILD = [
    chat(("human", "how do I sort a list?"), ("gpt", "use sorted()"), id="a"),
    chat(id="empty"),
    chat(("human", "search the web"), ("bing", "here is what I found"), id="b"),
    chat(("human", "hi"), ("narrator", "meanwhile..."), id="odd"),
    chat(("system", "only a system prompt"), id="sys"),
    chat(("gpt", "starts on the assistant"), ("chatgpt", "twice"), id="a"),
    chat(("user", "call it"), ("function", "{}"), ("observation", "42"), ("model", "it is 42")),
]


def test_wild_records_fail_alone_and_keep_their_ids(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "wild.jsonl", WILD)
    out = tmp_path / "out"
    with FakeOpenAIServer() as server:
        result = invoke(server, "distill", "-i", str(data), "-o", f"{out}/")
        assert result.exit_code == 1, result.output
        assert (
            f"FAILED {data} line 4 (id odd): message at index 1 has unknown role" in result.output
        )
        assert "--role-map narrator=ROLE" in result.output
        assert f"skipped {data} line 2 (id empty): no message has text" in result.output
        assert (
            "5 record(s) distilled, 0 skipped (already distilled), 1 skipped (empty), 1 failed;"
            in result.output
        )
        names = [p.name for p in json_files(out)]
        assert names == [
            "distilled_a.json",
            "distilled_a_5.json",
            "distilled_b.json",
            "distilled_sys.json",
            "distilled_wild_6.json",
        ]
        first = json.loads((out / "distilled_a_5.json").read_text())
        assert first["source"] == {"path": str(data), "index": 5, "id": "a"}
        tools = json.loads((out / "distilled_wild_6.json").read_text())
        roles = [m["role"] for c in tools["distilled_chunks"] for m in c["original_messages"]]
        assert roles == ["user", "tool", "tool", "assistant"]
        calls = server.calls
        again = invoke(
            server, "distill", "-i", str(data), "-o", f"{out}/", "--role-map", "narrator=user"
        )
        assert again.exit_code == 0, again.output
        assert (
            "1 record(s) distilled, 5 skipped (already distilled), 1 skipped (empty), 0 failed"
            in again.output
        )
        assert server.calls > calls
        assert "distilled_odd.json" in [p.name for p in json_files(out)]


def test_directory_output_is_redone_when_made_with_other_settings(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", WILD[:1] + WILD[2:3])
    out = tmp_path / "out"
    with FakeOpenAIServer() as server:
        assert invoke(server, "distill", "-i", str(data), "-o", f"{out}/").exit_code == 0
        other = invoke(server, "distill", "-i", str(data), "-o", f"{out}/", "--max-tokens", "900")
    assert other.exit_code == 0
    redoing = f"redoing {out / 'distilled_a.json'}: made with other settings"
    assert f"{redoing} (max_tokens: was 4000, now 900)" in other.output
    assert "2 record(s) distilled (2 redone: made with other settings), 0 skipped" in other.output
    assert json.loads((out / "distilled_a.json").read_text())["metadata"]["max_tokens"] == 900


def test_bad_role_map_and_missing_output_settings_are_usage_errors(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", WILD[:1])
    with FakeOpenAIServer() as server:
        result = invoke(server, "distill", "-i", str(data), "--role-map", "bot")
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == "error: --role-map 'bot': expected FROM=TO, e.g. narrator=assistant"
    )


def test_jsonl_output_is_completed_not_redone(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "d.jsonl", WILD)
    out = tmp_path / "res" / "out.jsonl"
    with FakeOpenAIServer() as server:
        first = invoke(server, "distill", "-i", str(data), "-o", str(out), "-j", "3")
        assert first.exit_code == 1
        lines = read_jsonl(out)
        assert sorted(line["source"]["index"] for line in lines) == [0, 2, 4, 5, 6]
        assert all(line["source"]["path"] == str(data) for line in lines)
        assert (tmp_path / "res" / "run_report.json").exists()
        calls = server.calls
        again = invoke(server, "distill", "-i", str(data), "-o", str(out), "-j", "3")
        assert server.calls == calls and again.exit_code == 1
        assert "0 record(s) distilled, 5 skipped (already distilled)" in again.output
        other = invoke(server, "distill", "-i", str(data), "-o", str(out), "--max-turns", "4")
        assert other.exit_code == 2 and server.calls == calls
        assert "was made with other settings (max_turns: was 10, now 4" in other.output
        assert "--force" in other.output and "Traceback" not in other.output
        forced = invoke(
            server, "distill", "-i", str(data), "-o", str(out), "--max-turns", "4", "--force"
        )
        assert forced.exit_code == 1
    lines = read_jsonl(out)
    assert len(lines) == 5 and {line["metadata"]["max_turns"] for line in lines} == {4}


def test_jsonl_output_cut_mid_line_is_repaired(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "d.jsonl", [chat(("human", f"q{n}"), ("gpt", "a"), id=f"i{n}") for n in range(4)]
    )
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer() as server:
        assert invoke(server, "distill", "-i", str(data), "-o", str(out)).exit_code == 0
        lines = out.read_text().splitlines(keepends=True)
        out.write_text("".join(lines[:2]) + lines[2][:40])
        result = invoke(server, "distill", "-i", str(data), "-o", str(out))
    assert result.exit_code == 0
    assert "dropped an unfinished last line" in result.output
    assert "2 record(s) distilled, 2 skipped" in result.output
    ids = [line["source"]["id"] for line in read_jsonl(out)]
    assert sorted(ids) == ["i0", "i1", "i2", "i3"]


def test_kill_9_mid_run_then_restart_gives_every_id_once(tmp_path: Path) -> None:
    rows = [
        chat(("human", f"question {n} " * 30), ("gpt", f"answer {n} " * 30), id=f"r{n}")
        for n in range(60)
    ]
    rows += [chat(("human", "dup"), ("gpt", "dup"), id="r7")]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer(latency=0.05) as server:
        command = [
            sys.executable, "-m", "graph_distill", "distill", "-i", str(data), "-o", str(out),
            "-j", "4", "-q", "--base-url", server.base_url, "--api-key", "k",
        ]  # fmt: skip
        process = subprocess.Popen(
            command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= 10:
                break
            time.sleep(0.02)
        assert process.poll() is None, "the run ended before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        written = out.read_bytes().count(b"\n")
        assert 10 <= written < len(rows)
        finished = subprocess.run(
            command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120
        )
    assert finished.returncode == 0
    keys = Counter((line["source"]["id"], line["source"]["index"]) for line in read_jsonl(out))
    assert set(keys.values()) == {1}
    assert sorted(keys) == sorted((row["id"], n) for n, row in enumerate(rows))


def test_truncated_json_array_keeps_records_before_the_cut(tmp_path: Path) -> None:
    rows = [chat(("human", f"q{n}"), ("gpt", f"a{n}"), id=f"t{n}") for n in range(6)]
    text = json.dumps(rows)
    data = tmp_path / "dump.json"
    data.write_text(text[: text.index('"t4"') + 3])
    out = tmp_path / "out.jsonl"
    with FakeOpenAIServer() as server:
        result = invoke(server, "distill", "-i", str(data), "-o", str(out))
    assert result.exit_code == 1
    assert f"{data} record 4: the file ends inside it (truncated)" in result.output
    assert sorted(line["source"]["id"] for line in read_jsonl(out)) == ["t0", "t1", "t2", "t3"]


def test_parquet_input(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {
            "conversation_id": f"p{n}",
            "messages": [
                {"role": "user", "content": f"q{n}"},
                {"role": "assistant", "content": "a"},
            ],
        }
        for n in range(5)
    ]
    data = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data)
    out = tmp_path / "out"
    with FakeOpenAIServer() as server:
        result = invoke(server, "distill", "-i", str(data), "-o", f"{out}/")
    assert result.exit_code == 0, result.output
    assert [p.name for p in json_files(out)] == [f"distilled_p{n}.json" for n in range(5)]


def test_parquet_without_pyarrow_is_one_plain_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "train.parquet"
    data.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with FakeOpenAIServer() as server:
        result = invoke(server, "distill", "-i", str(data))
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"error: {data}: reading Parquet needs pyarrow: pip install 'graph-distill[parquet]'"
    )


def test_progress_bar_shows_records_rate_and_time_left() -> None:
    stream = io.StringIO()
    bar = RecordBar(Console(file=stream, force_terminal=True, width=120))
    bar.begin(10)
    for n in range(4):
        bar.distilled(f"r{n}", "out.jsonl")
    bar.failed("d.jsonl line 5", "bad")
    bar.progress.refresh()
    shown = stream.getvalue()
    bar.close()
    assert "5/10" in shown and "records/s" in shown and "ETA" in shown
    assert "FAILED d.jsonl line 5: bad" in shown
