"""`graph-distill report` and `graph-distill export` end to end: files written, imported
datasets lined up with their distilled records, exports read back, the judge against the fake
server, and plain one-line errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from graph_distill.cli.main import main
from graph_distill.files.readers import SourceConversation, read_records
from graph_distill.report.dataset import Dataset
from graph_distill.report.judge import judge_tasks
from graph_distill.run.ledger import MIMO_V2_FLASH_PRICES, estimate_cost
from tests.support.fake_openai import FakeOpenAIServer, message_text
from tests.support.synthetic import distilled_record, write_dataset, write_json

REPORT_KEYS = {
    "conversations",
    "rounds",
    "typo_rate",
    "topic_switches",
    "termination_reasons",
    "degeneration",
    "near_duplicates",
    "coverage",
    "coverage_by_position",
    "citation_validity",
    "raw_chunks",
}


def conversations_of(path: Path) -> list[SourceConversation]:
    return [r for r in read_records(path) if isinstance(r, SourceConversation)]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def dataset(tmp_path: Path) -> tuple[Path, Path]:
    return write_dataset(tmp_path / "data", 6, 12, seed=3, vocab_size=2000)


def test_report_writes_the_page_the_json_and_one_script_per_conversation(
    dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    conversations, distilled = dataset
    out = tmp_path / "out"
    result = invoke("report", "-c", str(conversations), "-d", str(distilled), "-o", str(out))
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "report.json").read_text())
    assert set(figures) >= REPORT_KEYS
    assert figures["conversations"] == 6
    assert figures["coverage"]["files"] == 6
    assert sorted(p.name for p in (out / "conversations").iterdir()) == [
        f"c{n}.js" for n in range(6)
    ]
    page = (out / "index.html").read_text()
    # Offline: nothing fetched, nothing loaded from a server.
    assert "fetch(" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert page.count("<svg") >= 5


def test_report_lines_up_an_imported_dataset_with_its_distilled_records(tmp_path: Path) -> None:
    records = [
        {
            "conversations": [
                {"from": "human", "value": f"question {n} about kettles"},
                {"from": "gpt", "value": ""},  # dropped by the reader: later turns shift
                {"from": "gpt", "value": f"answer {n} about descaling kettles"},
                {"from": "human", "value": f"followup {n} about limescale"},
                {"from": "gpt", "value": f"reply {n} about vinegar and limescale"},
            ]
        }
        for n in range(2)
    ]
    dump = tmp_path / "dump.jsonl"
    dump.write_text("".join(json.dumps(r) + "\n" for r in records))
    for source in conversations_of(dump):
        messages = source.messages
        data = distilled_record(source.source_value, messages, max_turns=10)
        data["distilled_chunks"][0]["notes"]["core_questions"] = [
            {"text": "vinegar descaling limescale", "turns": [3]}
        ]
        write_json(tmp_path / "d" / f"distilled_{source.stem}.json", data)
    out = tmp_path / "out"
    result = invoke("report", "-c", str(dump), "-d", str(tmp_path / "d"), "-o", str(out))
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "report.json").read_text())
    assert figures["conversations"] == 2 and figures["coverage"]["files"] == 2
    assert figures["scenarios"] == {"(imported)": 2}
    validity = figures["citation_validity"]
    # Turn 3 is the reply about vinegar only when the empty message is dropped, as distill does.
    assert validity["model_cited"] == 2
    assert validity["supported_share"] == 1.0


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_export_sharegpt_and_openai_with_cards(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    conversations, _ = dataset
    result = invoke(
        "export", "-c", str(conversations), "--format", "sharegpt", "-o", str(tmp_path / "sg")
    )
    assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "sg" / "train.jsonl")
    assert len(rows) == 6
    assert [turn["from"] for turn in rows[0]["conversations"][:2]] == ["human", "gpt"]
    card = (tmp_path / "sg" / "README.md").read_text()
    assert "data_files: train.jsonl" in card and "conversations: 6" in card

    target = tmp_path / "chat.jsonl"
    assert (
        invoke(
            "export", "-c", str(conversations), "--format", "openai", "-o", str(target)
        ).exit_code
        == 0
    )
    rows = read_jsonl(target)
    assert set(rows[0]) == {"messages"} and rows[0]["messages"][0]["role"] == "user"
    assert (tmp_path / "chat.card.md").exists()


def test_export_parquet_reads_back_with_pyarrow(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    conversations, distilled = dataset
    target = tmp_path / "rows.parquet"
    args = ["export", "-c", str(conversations), "-d", str(distilled), "--format", "parquet"]
    assert invoke(*args, "-o", str(target)).exit_code == 0
    table = pq.read_table(target)
    assert table.num_rows == 6
    row = table.slice(0, 1).to_pylist()[0]
    assert row["rounds"] == 12 and len(row["messages"]) == 24
    assert set(row["messages"][0]) == {"role", "content"}
    assert row["final_summary"].startswith("Overall Conversation Topic")


def test_export_summaries_with_clean_text(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    conversations, distilled = dataset
    target = tmp_path / "pairs.jsonl"
    args = ["export", "-c", str(conversations), "-d", str(distilled), "--format", "summaries"]
    assert invoke(*args, "--clean", "-o", str(target)).exit_code == 0
    rows = read_jsonl(target)
    assert {row["kind"] for row in rows} == {"conversation_summary", "chunk_notes"}
    assert set(rows[0]) == {"id", "source", "input", "output", "kind"}
    summary = next(row for row in rows if row["kind"] == "conversation_summary")
    record = json.loads(Path(summary["source"]).read_text())
    noised = record["metadata"]["noise"][0]
    assert summary["input"][noised["turn"]]["content"] == noised["clean"]
    chunk_inputs = [
        m["content"] for row in rows if row["kind"] == "chunk_notes" for m in row["input"]
    ]
    assert record["conversation"][noised["turn"]]["content"] not in chunk_inputs


def test_export_filters_and_never_overwrites(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    conversations, _ = dataset
    first = sorted(conversations.glob("Programming_*.json"))[0]
    shutil.copy(first, conversations / "zz_copy.json")
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text("my own card\n")
    args = ["export", "-c", str(conversations), "--format", "sharegpt", "-o", str(out)]
    result = invoke(*args, "--drop-near-duplicates", "--scenario", "programming")
    assert result.exit_code == 0, result.output
    rows = read_jsonl(out / "train.jsonl")
    assert len(rows) == 2  # 7 conversations: 4 not Programming, the copy a near-duplicate
    assert "dropped by --scenario: 4; dropped by --drop-near-duplicates: 1" in result.output
    assert (out / "README.md").read_text() == "my own card\n"
    again = invoke(*args)
    assert again.exit_code == 2
    assert again.output.strip().endswith("exists: pass --force to replace it")
    nothing = invoke(*args, "--force", "--min-rounds", "13")
    assert nothing.exit_code == 2
    assert nothing.output.strip() == "error: no conversation passes the filters: nothing written"
    assert len(read_jsonl(out / "train.jsonl")) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "-c", "nowhere", "-o", "out"], "error: -c nowhere: no such file or directory"),
        (
            ["report", "-c", ".", "-o", "out", "--judge"],
            "error: --judge needs the distilled files (-d)",
        ),
        (
            ["export", "-c", ".", "--format", "summaries", "-o", "x.jsonl"],
            "error: --format summaries needs the distilled files (-d)",
        ),
        (["report", "-c", ".", "-o", "out"], "error: -c .: no conversations found"),
    ],
)
def test_user_mistakes_get_one_line_and_exit_2(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [message]
    assert not Path("out").exists()


def judge_responder(body: dict[str, Any]) -> str:
    """Supported for odd item numbers, not for even ones."""
    prompt = message_text(body["messages"][-1])
    numbers = [int(n) for n in re.findall(r"^(\d+)\. ", prompt, re.MULTILINE)]
    return json.dumps({"verdicts": [{"item": n, "supported": n % 2 == 1} for n in numbers]})


def test_judge_counts_supported_items_calls_and_cost(
    dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    conversations, distilled = dataset
    tasks = judge_tasks(Dataset(conversations, distilled))
    items = [len(task.items) for task in tasks]
    with FakeOpenAIServer(responder=judge_responder) as server:
        result = invoke(
            "report",
            "-c",
            str(conversations),
            "-d",
            str(distilled),
            "-o",
            str(tmp_path / "out"),
            "--judge",
            "--base-url",
            server.base_url,
            "--api-key",
            "k",
        )
        calls = server.calls
    assert result.exit_code == 0, result.output
    judge = json.loads((tmp_path / "out" / "report.json").read_text())["judge"]
    assert calls == len(tasks) == judge["usage"]["calls"] == judge["estimate"]["calls"]
    assert judge["items"] == sum(items)
    assert judge["supported"] == sum((n + 1) // 2 for n in items)
    assert judge["cost_usd"] == round(estimate_cost(judge["usage"], MIMO_V2_FLASH_PRICES), 6)
    assert f"in {len(tasks)} call(s)" in result.output
    assert len(judge["files"]) == 6


def test_distilled_records_in_one_file_match_by_source(tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    records = [
        {
            "messages": [
                {"role": "user", "content": f"ask {n}"},
                {"role": "assistant", "content": f"tell {n}"},
            ]
        }
        for n in range(3)
    ]
    dump.write_text("".join(json.dumps(r) + "\n" for r in records))
    distilled = [
        distilled_record(source.source_value, source.messages) for source in conversations_of(dump)
    ]
    # Written elsewhere, from another working directory: the file name and position match.
    for record in distilled:
        record["source"]["path"] = "/elsewhere/dump.jsonl"
    all_distilled = write_json(tmp_path / "out" / "distilled_all.json", distilled[::-1][:2])
    dataset = Dataset(dump, all_distilled)
    found = {c.key: c.distilled is not None for c in dataset}
    assert found == {"dump_0": False, "dump_1": True, "dump_2": True}


def test_report_sets_simulated_users_beside_a_reference(
    dataset: tuple[Path, Path], tmp_path: Path
) -> None:
    conversations, _ = dataset
    real = tmp_path / "real.json"
    real.write_text(
        json.dumps(
            [
                {
                    "conversations": [
                        {"from": "human", "value": "why?"},
                        {"from": "gpt", "value": "ok"},
                    ]
                }
            ]
        )
    )
    args = ["report", "-c", str(conversations), "-o", str(tmp_path / "out")]
    assert invoke(*args, "--reference", str(real)).exit_code == 0
    reference = json.loads((tmp_path / "out" / "report.json").read_text())["reference"]
    assert reference["real"]["question_share"] == 1.0
    assert reference["simulated"]["user_messages"] == 6 * 12
    assert '<section id="reference">' in (tmp_path / "out" / "index.html").read_text()
    realism = json.loads((tmp_path / "out" / "report.json").read_text())["realism"]
    assert realism["metrics"]["question"]["reference"] == 1.0
    assert 0 < realism["distance"] <= 1
    page = (tmp_path / "out" / "index.html").read_text()
    assert '<section id="realism">' in page
    assert 'data-plot="realism_message_words"' in page
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = invoke(*args, "--reference", str(bad))
    assert result.exit_code == 2
    assert result.output.startswith(f"error: --reference {bad}: not valid JSON")


def test_distilled_json_lines_are_looked_up_by_source_in_any_order(tmp_path: Path) -> None:
    dump = tmp_path / "dump.jsonl"
    records = [
        {"id": f"r{n}", "messages": [{"role": "user", "content": f"ask {n}"}]} for n in range(4)
    ]
    dump.write_text("".join(json.dumps(r) + "\n" for r in records))
    distilled = [
        distilled_record(source.source_value, source.messages) for source in conversations_of(dump)
    ]
    lines = tmp_path / "out.jsonl"
    # Finished in another order than read, one record missing, a line cut by a killed run.
    kept = [distilled[2], distilled[0], distilled[3]]
    lines.write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"source": {"pa')
    found = {c.key: (c.distilled or {}).get("source") for c in Dataset(dump, lines)}
    assert found == {
        "r0": distilled[0]["source"],
        "r1": None,
        "r2": distilled[2]["source"],
        "r3": distilled[3]["source"],
    }


def test_export_max_realism_distance_drops_the_degenerate_conversation(tmp_path: Path) -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
    picked = [fixtures / "healthy" / "35MnFU7_0.json", *sorted(fixtures.glob("degenerate/*"))]
    source = tmp_path / "mixed.jsonl"
    source.write_text(
        "".join(
            json.dumps({"messages": json.loads(p.read_text())["conversation"]}) + "\n"
            for p in picked
        )
    )
    out = tmp_path / "out"
    result = invoke(
        "export",
        "-c",
        str(source),
        "--format",
        "openai",
        "-o",
        str(out),
        "--max-realism-distance",
        "0.4",
    )
    assert result.exit_code == 0, result.output
    assert len((out / "train.jsonl").read_text().splitlines()) == 1
    assert "dropped by --max-realism-distance: 2" in result.output
    card = (out / "README.md").read_text()
    assert "realism distance at most 0.4" in card
    assert re.search(r"- realism distance: 0\.\d+", card)
    assert "share of messages with a question: " in card


def test_export_max_realism_distance_refuses_a_missing_reference(tmp_path: Path) -> None:
    source = tmp_path / "one.jsonl"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    source.write_text(json.dumps({"messages": messages}) + "\n")
    out, missing = tmp_path / "out", tmp_path / "nope.json"
    result = invoke(
        *("export", "-c", str(source), "--format", "openai", "-o", str(out)),
        *("--max-realism-distance", "0.5", "--reference", str(missing)),
    )
    assert result.exit_code != 0
    assert result.output.strip() == f"error: --reference {missing}: no such file or directory"
    assert not out.exists()
