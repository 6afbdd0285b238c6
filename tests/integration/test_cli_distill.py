"""`graph-distill distill` and `run` with distillation, end to end against the fake server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from graph_distill.cli.main import main
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.files import json_files
from tests.support.roles import RoleResponder, role_of

DISTILLED_KEYS = [
    "source",
    "total_chunks",
    "distilled_chunks",
    "final_summary",
    "final_notes",
    "metadata",
]


def invoke(server: FakeOpenAIServer, *args: str) -> Result:
    return CliRunner().invoke(
        main, [*args, "--base-url", server.base_url, "--api-key", "k"], catch_exceptions=False
    )


def dialogue(rounds: int, words: int = 60) -> list[dict[str, str]]:
    return [
        {
            "role": role,
            "content": f"{role} turn {i}: " + " ".join(f"w{i}x{k}" for k in range(words)),
        }
        for i in range(rounds)
        for role in ("user", "assistant")
    ]


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_distill_one_file_writes_contract_output(tmp_path: Path) -> None:
    source = write(
        tmp_path / "talk.json",
        {"scenario": {"name": "x"}, "total_rounds": 12, "conversation": dialogue(12)},
    )
    with FakeOpenAIServer() as server:
        result = invoke(
            server, "distill", "-i", str(source), "--max-tokens", "500", "--overlap-tokens", "60"
        )
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "distilled" / "distilled_talk.json").read_text())
    assert list(data) == DISTILLED_KEYS
    assert data["source"] == str(source)
    assert data["total_chunks"] == len(data["distilled_chunks"]) > 1
    for index, chunk in enumerate(data["distilled_chunks"]):
        assert chunk["chunk_index"] == index
        assert chunk["original_messages"] and chunk["distilled_content"]
    assert data["final_summary"].startswith("Overall Conversation Topic:")
    meta = data["metadata"]
    assert (meta["split_method"], meta["max_tokens"], meta["overlap_tokens"]) == ("tokens", 500, 60)
    assert meta["usage"]["calls"] >= data["total_chunks"]


def test_output_file_option_and_turns_split(tmp_path: Path) -> None:
    source = write(tmp_path / "talk.json", {"messages": dialogue(5)})
    target = tmp_path / "out" / "mine.json"
    with FakeOpenAIServer() as server:
        result = invoke(
            server,
            "distill",
            "-i",
            str(source),
            "-o",
            str(target),
            "--split-method",
            "turns",
            "--max-turns",
            "4",
        )
    assert result.exit_code == 0, result.output
    data = json.loads(target.read_text())
    assert data["metadata"]["split_method"] == "turns"
    assert all(len(c["original_messages"]) <= 4 for c in data["distilled_chunks"])


def test_batch_with_bad_files_goes_on_and_exits_1(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    write(inputs / "good.json", {"conversation": dialogue(3)})
    sharegpt = [
        {
            "conversations": [
                {"from": "human", "value": "hi there, question?"},
                {"from": "gpt", "value": "an answer here"},
            ]
        }
    ] * 2
    write(inputs / "many.jsonl", "\n".join(json.dumps(c) for c in sharegpt))
    write(inputs / "broken.json", "{not json")
    write(inputs / "roles.json", {"messages": [{"role": "narrator", "content": "x"}]})
    (inputs / "latin1.json").write_bytes('{"messages": "caf\xe9"}'.encode("latin-1"))
    out = tmp_path / "out"
    with FakeOpenAIServer() as server:
        result = invoke(server, "distill", "-i", str(inputs), "-b", "-o", str(out), "-j", "2")
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    written = sorted(p.name for p in json_files(out))
    assert written == ["distilled_good.json", "distilled_many_0.json", "distilled_many_1.json"]
    for bad, problem in (
        ("broken.json", "not valid JSON"),
        ("roles.json", "unknown role"),
        ("latin1.json", "not UTF-8"),
    ):
        assert bad in result.output and problem in result.output
    assert "3 failed" in result.output
    assert f"{inputs / 'broken.json'}: {inputs / 'broken.json'}" not in result.output


def test_existing_outputs_are_skipped_unless_forced(tmp_path: Path) -> None:
    source = write(tmp_path / "talk.json", {"conversation": dialogue(2)})
    with FakeOpenAIServer() as server:
        assert invoke(server, "distill", "-i", str(source)).exit_code == 0
        calls = server.calls
        again = invoke(server, "distill", "-i", str(source))
        assert server.calls == calls and "1 skipped" in again.output
        forced = invoke(server, "distill", "-i", str(source), "--force")
        assert forced.exit_code == 0 and server.calls > calls


def test_directory_without_batch_is_a_usage_error(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        result = invoke(server, "distill", "-i", str(tmp_path))
    assert result.exit_code == 2 and "-b" in result.output


def test_run_distills_each_conversation_as_soon_as_it_is_saved(tmp_path: Path) -> None:
    responder = RoleResponder()
    with FakeOpenAIServer(responder, latency=0.05) as server:
        result = invoke(
            server,
            "run",
            "-n",
            "3",
            "-j",
            "1",
            "--min-rounds",
            "3",
            "--max-rounds",
            "3",
            "--seed",
            "9",
            "-c",
            str(tmp_path / "c"),
            "-d",
            str(tmp_path / "d"),
            "-q",
        )
        records = server.records
    assert result.exit_code == 0, result.output
    conversations = json_files(tmp_path / "c")
    distilled = json_files(tmp_path / "d")
    assert len(conversations) == 3
    assert [p.name for p in distilled] == [f"distilled_{c.stem}.json" for c in conversations]
    first_distill = min(r.received_at for r in records if role_of(r.body) == "distill")
    last_chat = max(r.received_at for r in records if role_of(r.body) != "distill")
    assert first_distill < last_chat  # distillation overlapped generation
