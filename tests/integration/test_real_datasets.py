"""Datasets as they are found, through every command: `report`, `export` and `--reference` show
every record with text and name the others (empty, malformed, unknown role) in JSON Lines, a
JSON array and Parquet; and `distill -o` writes exactly where it is told."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.test_cli_datasets import chat, read_jsonl, write_jsonl
from tests.integration.test_cli_distill import invoke as invoke_on
from tests.integration.test_report_cli import invoke
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.files import json_files

GOOD = [
    chat(("human", f"how do I descale kettle {n}?"), ("gpt", f"use vinegar {n} times"), id=f"g{n}")
    for n in range(4)
]
EMPTY = chat(("human", ""), ("gpt", "  "), id="blank")
ODD_ROLE = chat(("human", "hi"), ("narrator", "meanwhile..."), id="odd")


def jsonl_dump(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "dump.jsonl"
    lines = [json.dumps(r) for r in [*GOOD[:2], EMPTY]] + ['{"id": "cut", "conversa']
    lines += [json.dumps(r) for r in [ODD_ROLE, *GOOD[2:]]]
    path.write_text("\n".join(lines) + "\n")
    return path, [
        f"{path} line 3 (id blank): no message has text",
        f"{path} line 4: not valid JSON",
        f"{path} line 5 (id odd): message at index 1 has unknown role 'narrator'",
    ]


def array_dump(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "dump.json"
    path.write_text(json.dumps([*GOOD[:2], EMPTY, 7, ODD_ROLE, *GOOD[2:]], indent=1))
    return path, [
        f"{path} record 2 (id blank): no message has text",
        f"{path} record 3: a JSON number",
        f"{path} record 4 (id odd): message at index 1 has unknown role 'narrator'",
    ]


def parquet_dump(tmp_path: Path) -> tuple[Path, list[str]]:
    path = tmp_path / "dump.parquet"
    rows = [
        {"id": r["id"], "conversations": r["conversations"]} for r in [*GOOD[:2], EMPTY, ODD_ROLE]
    ]
    rows.insert(3, {"id": "none", "conversations": [{"from": None, "value": "who said it?"}]})
    rows += [{"id": r["id"], "conversations": r["conversations"]} for r in GOOD[2:]]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, [
        f"{path} row 2 (id blank): no message has text",
        f"{path} row 3 (id none): message at index 0 has unknown role None",
        f"{path} row 4 (id odd): message at index 1 has unknown role 'narrator'",
    ]


DUMPS = [jsonl_dump, array_dump, parquet_dump]


def starts(lines: list[str], prefixes: list[str]) -> bool:
    return len(lines) == len(prefixes) and all(
        line.startswith(prefix) for line, prefix in zip(lines, prefixes, strict=True)
    )


@pytest.mark.parametrize("make", DUMPS)
def test_report_shows_every_record_with_text_and_names_the_others(
    tmp_path: Path, make: Any
) -> None:
    dump, skips = make(tmp_path)
    out = tmp_path / "rep"
    result = invoke("report", "-c", str(dump), "-o", str(out))
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "report.json").read_text())
    assert figures["conversations"] == len(GOOD)
    assert starts(figures["inputs"]["skipped"], skips), figures["inputs"]["skipped"]
    assert len(list((out / "conversations").iterdir())) == len(GOOD)
    assert "4 conversation(s), 0 distilled file(s), 3 record(s) skipped" in result.output
    page = (out / "index.html").read_text()
    assert all(skip.replace("'", "&#x27;") in page for skip in skips)
    ids = [json.loads(line.partition(",")[2][:-3])["id"] for line in _scripts(out)]
    assert sorted(ids) == [r["id"] for r in GOOD]


def _scripts(out: Path) -> list[str]:
    return [p.read_text() for p in sorted((out / "conversations").iterdir())]


@pytest.mark.parametrize("make", DUMPS)
def test_export_writes_every_good_record_and_counts_the_skipped(tmp_path: Path, make: Any) -> None:
    dump, skips = make(tmp_path)
    target = tmp_path / "train.jsonl"
    result = invoke("export", "-c", str(dump), "--format", "sharegpt", "-o", str(target))
    assert result.exit_code == 0, result.output
    rows = read_jsonl(target)
    assert [row["id"] for row in rows] == [r["id"] for r in GOOD]
    assert "4 row(s) written from 4 conversation(s)" in result.output
    assert "3 record(s) skipped" in result.output
    assert [line for line in result.output.splitlines() if line.startswith("skipped ")] == [
        line for line in result.output.splitlines() if any(s in line for s in skips)
    ]


@pytest.mark.parametrize("make", DUMPS)
def test_reference_reads_the_same_file(tmp_path: Path, make: Any) -> None:
    dump, skips = make(tmp_path)
    ours = write_jsonl(tmp_path / "ours.jsonl", GOOD[:1])
    out = tmp_path / "rep"
    result = invoke("report", "-c", str(ours), "-o", str(out), "--reference", str(dump))
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "report.json").read_text())
    assert figures["reference"]["real"]["user_messages"] == len(GOOD)
    assert starts(figures["inputs"]["skipped"], [f"--reference {s}" for s in skips])


@pytest.mark.parametrize(
    ("text", "problem"), [("", "empty file"), ("[]", "an empty JSON array, no conversations")]
)
def test_an_unusable_file_is_one_plain_line(tmp_path: Path, text: str, problem: str) -> None:
    dump = tmp_path / "d.json"
    dump.write_text(text)
    for args in (
        ["report", "-c", str(dump), "-o", str(tmp_path / "r")],
        ["export", "-c", str(dump), "--format", "openai", "-o", str(tmp_path / "e.jsonl")],
    ):
        result = invoke(*args)
        assert result.exit_code == 2
        assert result.output.splitlines() == [f"error: -c {dump}: {problem}"]
    ours = write_jsonl(tmp_path / "ours.jsonl", GOOD[:1])
    args = ["report", "-c", str(ours), "-o", str(tmp_path / "r"), "--reference", str(dump)]
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.output.splitlines() == [f"error: --reference {dump}: {problem}"]


def test_a_directory_goes_on_past_an_unusable_file(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a_empty.json").write_text("")
    jsonl_dump(folder)
    result = invoke("report", "-c", str(folder), "-o", str(tmp_path / "r"))
    assert result.exit_code == 0, result.output
    skipped = json.loads((tmp_path / "r" / "report.json").read_text())["inputs"]["skipped"]
    assert skipped[0] == f"{folder / 'a_empty.json'}: empty file"
    assert len(skipped) == 4


def test_only_unusable_records_is_one_line_naming_the_first(tmp_path: Path) -> None:
    dump = write_jsonl(tmp_path / "d.jsonl", [EMPTY, ODD_ROLE])
    result = invoke("report", "-c", str(dump), "-o", str(tmp_path / "r"))
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        f"error: -c {dump}: no conversations found (2 record(s) skipped, first: "
        f"{dump} line 1 (id blank): no message has text)"
    ]


# distill -o


def sources(out: Path) -> list[Any]:
    return [json.loads(p.read_text())["source"] for p in json_files(out)]


@pytest.mark.parametrize("container", ["jsonl", "array"])
def test_one_record_goes_into_the_file_o_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, container: str
) -> None:
    monkeypatch.chdir(tmp_path)
    if container == "jsonl":
        data = write_jsonl(tmp_path / "one.jsonl", GOOD[:1])
    else:
        data = tmp_path / "arr.json"
        data.write_text(json.dumps(GOOD[:1]))
    with FakeOpenAIServer() as server:
        result = invoke_on(server, "distill", "-i", str(data), "-o", "out.json")
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "out.json").read_text())
    assert written["source"] == {"path": str(data), "index": 0, "id": "g0"}
    assert not (tmp_path / "distilled").exists()
    assert (tmp_path / "run_report.json").is_file()


def test_several_records_into_one_file_are_refused_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data, _ = jsonl_dump(tmp_path)
    with FakeOpenAIServer() as server:
        result = invoke_on(server, "distill", "-i", str(data), "-o", "out.json")
        assert server.calls == 0
    assert result.exit_code == 2
    assert result.output.splitlines() == [
        "error: -o out.json: 4 records to distill do not fit in one file; give a .jsonl file "
        "(-o out.jsonl) or a directory (-o out/)"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump.jsonl"]


def test_an_unrelated_input_with_the_same_id_is_distilled_where_o_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = write_jsonl(tmp_path / "first.jsonl", GOOD[:1])
    other = chat(("human", "something else entirely"), ("gpt", "indeed"), id="g0")
    second = write_jsonl(tmp_path / "second.jsonl", [other])
    with FakeOpenAIServer() as server:
        assert invoke_on(server, "distill", "-i", str(first)).exit_code == 0
        assert invoke_on(server, "distill", "-i", str(first), "-o", "a.json").exit_code == 0
        calls = server.calls
        result = invoke_on(server, "distill", "-i", str(second), "-o", "b.json")
        assert server.calls > calls
    assert result.exit_code == 0, result.output
    assert "1 record(s) distilled, 0 skipped (already distilled)" in result.output
    assert json.loads((tmp_path / "b.json").read_text())["source"]["path"] == str(second)
    assert sources(tmp_path / "distilled") == [{"path": str(first), "index": 0, "id": "g0"}]


def test_a_file_of_another_record_is_never_replaced_nor_taken_as_done(tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "first.jsonl", GOOD[:2])
    other = chat(("human", "something else entirely"), ("gpt", "indeed"), id="g0")
    second = write_jsonl(tmp_path / "second.jsonl", [other, GOOD[3]])
    out = tmp_path / "out"
    with FakeOpenAIServer() as server:
        assert invoke_on(server, "distill", "-i", str(first), "-o", f"{out}/").exit_code == 0
        result = invoke_on(server, "distill", "-i", str(second), "-o", str(out))
    assert result.exit_code == 1
    assert (
        f"FAILED {second} line 1 (id g0): {out / 'distilled_g0.json'} holds the notes of another "
        "record" in result.output
    )
    assert (
        "1 record(s) distilled, 0 skipped (already distilled), 0 skipped (empty), 1 failed"
        in result.output
    )
    assert json.loads((out / "distilled_g0.json").read_text())["source"]["path"] == str(first)
    assert [p.name for p in json_files(out)] == [
        "distilled_g0.json",
        "distilled_g1.json",
        "distilled_g3.json",
    ]


@pytest.mark.parametrize("spelling", ["trailing slash", "existing", "batch"])
def test_a_directory_gets_one_file_per_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    monkeypatch.chdir(tmp_path)
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_jsonl(inputs / "d.jsonl", GOOD)
    args = ["distill", "-i", str(inputs / "d.jsonl"), "-o", "res/"]
    if spelling == "existing":
        (tmp_path / "res").mkdir()
        args[-1] = "res"
    elif spelling == "batch":
        args = ["distill", "-i", str(inputs), "-b", "-o", "res"]
    with FakeOpenAIServer() as server:
        result = invoke_on(server, *args)
    assert result.exit_code == 0, result.output
    assert [p.name for p in json_files(tmp_path / "res")] == [
        f"distilled_g{n}.json" for n in range(4)
    ]
    assert not (tmp_path / "distilled").exists()


def test_jsonl_output_and_nothing_in_distilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "d.jsonl", GOOD)
    with FakeOpenAIServer() as server:
        result = invoke_on(server, "distill", "-i", str(data), "-o", "res/out.jsonl")
    assert result.exit_code == 0, result.output
    assert sorted(r["source"]["id"] for r in read_jsonl(tmp_path / "res" / "out.jsonl")) == [
        f"g{n}" for n in range(4)
    ]
    assert not (tmp_path / "distilled").exists()


def test_without_o_one_record_is_named_after_its_file_several_by_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    one = write_jsonl(tmp_path / "single.jsonl", GOOD[:1])
    several = write_jsonl(tmp_path / "several.jsonl", GOOD[1:3])
    with FakeOpenAIServer() as server:
        assert invoke_on(server, "distill", "-i", str(one)).exit_code == 0
        assert invoke_on(server, "distill", "-i", str(several)).exit_code == 0
    assert [p.name for p in json_files(tmp_path / "distilled")] == [
        "distilled_g1.json",
        "distilled_g2.json",
        "distilled_single.json",
    ]
