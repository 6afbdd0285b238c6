from __future__ import annotations

import errno
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from graph_distill.files.readers import (
    ROLE_ALIASES,
    BadRecord,
    EmptyRecord,
    InputError,
    ReadOptions,
    SourceConversation,
    find_inputs,
    parse_role_map,
    read_conversation,
    read_records,
)
from graph_distill.files.writing import (
    conversation_file,
    distilled_file,
    distilled_path,
    reserve_conversation_path,
    write_json_atomic,
    write_new_conversation,
)

SCENARIO = {"name": "ML", "description": "d", "user_prompt": "p", "ai_role": "r"}
EXPECTED_MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
]
OURS = {
    "scenario": SCENARIO,
    "conversation": EXPECTED_MESSAGES,
    "total_rounds": 1,
    "created_at": "2026-01-11T19:43:32",
}
SHAREGPT = {
    "conversations": [
        {"from": "system", "value": "be brief"},
        {"from": "human", "value": "hi"},
        {"from": "gpt", "value": "hello"},
    ]
}
OPENAI = {"messages": EXPECTED_MESSAGES}
WHEN = datetime(2026, 1, 11, 19, 43, 32)


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def records(path: Path, **options: Any) -> list[Any]:
    return list(read_records(path, ReadOptions(**options)))


def input_error(path: Path, problem_part: str) -> InputError:
    with pytest.raises(InputError) as caught:
        records(path)
    error = caught.value
    assert str(error) == f"{path}: {error.problem}"
    assert "\n" not in str(error)
    assert error.path == str(path)
    assert problem_part in error.problem, error.problem
    return error


def bad_record(path: Path, **options: Any) -> BadRecord:
    [record] = [r for r in records(path, **options) if isinstance(r, BadRecord)]
    assert "\n" not in record.problem
    return record


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# reading: every format in every container


@pytest.mark.parametrize(("record", "is_ours"), [(OURS, True), (SHAREGPT, False), (OPENAI, False)])
def test_single_json_object(tmp_path: Path, record: dict[str, Any], is_ours: bool) -> None:
    path = write_text(tmp_path / "chat.json", json.dumps(record))
    [conversation] = read_records_ok(path)
    origin = None if is_ours else {"path": str(path), "index": 0, "id": None}
    assert conversation == SourceConversation(
        source=str(path),
        stem="chat",
        messages=EXPECTED_MESSAGES,
        record=OURS if is_ours else None,
        origin=origin,
    )
    assert conversation.source_value == (str(path) if is_ours else origin)


@pytest.mark.parametrize("record", [OURS, SHAREGPT, OPENAI])
def test_json_list_names_records_by_index(tmp_path: Path, record: dict[str, Any]) -> None:
    path = write_text(tmp_path / "many.json", json.dumps([record] * 10))
    conversations = read_records_ok(path)
    assert [c.source for c in conversations] == [f"{path} record {n}" for n in range(10)]
    assert [c.stem for c in conversations] == [f"many_{n}" for n in range(10)]
    assert [c.origin for c in conversations] == [
        {"path": str(path), "index": n, "id": None} for n in range(10)
    ]
    assert not any(c.whole_file for c in conversations)
    assert all(c.messages == EXPECTED_MESSAGES for c in conversations)


@pytest.mark.parametrize("record", [OURS, SHAREGPT, OPENAI])
def test_json_lines_with_blank_lines(tmp_path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record)
    path = write_text(tmp_path / "lines.jsonl", f"\n{line}\n\n{line}\r\n{line}\n\n")
    conversations = read_records_ok(path)
    assert [c.stem for c in conversations] == ["lines_0", "lines_1", "lines_2"]
    assert [c.source for c in conversations] == [f"{path} line {n}" for n in (2, 4, 5)]
    assert all(c.messages == EXPECTED_MESSAGES for c in conversations)
    assert all(c.record == (record if record is OURS else None) for c in conversations)


def test_formats_may_be_mixed_in_one_list(tmp_path: Path) -> None:
    path = write_text(tmp_path / "mixed.json", json.dumps([OURS, SHAREGPT, OPENAI]))
    conversations = read_records_ok(path)
    assert [c.messages for c in conversations] == [EXPECTED_MESSAGES] * 3
    assert [c.record is not None for c in conversations] == [True, False, False]


def test_detection_is_by_content_not_suffix(tmp_path: Path) -> None:
    lines = write_text(tmp_path / "lines.json", f"{json.dumps(OPENAI)}\n{json.dumps(SHAREGPT)}\n")
    assert [c.stem for c in read_records_ok(lines)] == ["lines_0", "lines_1"]
    pretty = write_text(tmp_path / "pretty.jsonl", json.dumps(OURS, indent=2))
    [conversation] = read_records_ok(pretty)
    assert (conversation.stem, conversation.source) == ("pretty", str(pretty))


def test_single_element_list_keeps_the_file_name(tmp_path: Path) -> None:
    path = write_text(tmp_path / "one.json", json.dumps([OPENAI]))
    [conversation] = read_records_ok(path)
    assert (conversation.source, conversation.stem, conversation.whole_file) == (
        str(path),
        "one",
        True,
    )


def test_original_format_record_is_kept_whole(tmp_path: Path) -> None:
    record = {**OURS, "id": "abc", "metadata": {"seed": 1}, "extra": [1, 2]}
    path = write_text(tmp_path / "x.json", json.dumps(record, ensure_ascii=False))
    [conversation] = read_records_ok(path)
    assert conversation.record == record
    assert (conversation.source_value, conversation.stem) == (str(path), "x")


# ids


def test_ids_name_records_and_go_into_their_origin(tmp_path: Path) -> None:
    rows = [
        {"id": "a/1", **SHAREGPT},
        {"conversation_id": 7, **OPENAI},
        {"key": "k", **OPENAI},
        {"id": "", **OPENAI},
    ]
    path = write_text(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows))
    conversations = read_records_ok(path)
    assert [c.stem for c in conversations] == ["a/1", "7", "d_2", "d_3"]
    assert [c.origin["id"] for c in conversations if c.origin] == ["a/1", "7", None, None]
    assert conversations[0].source == f"{path} line 1 (id a/1)"
    named = records(path, id_field="key")
    assert [r.origin["id"] for r in named] == [None, None, "k", None]


def test_a_single_record_is_named_after_its_file_and_keeps_its_id(tmp_path: Path) -> None:
    path = write_text(tmp_path / "one.json", json.dumps({"id": "x9", **SHAREGPT}))
    [conversation] = read_records_ok(path)
    assert (conversation.stem, conversation.source, conversation.origin) == (
        "one",
        f"{path} (id x9)",
        {"path": str(path), "index": 0, "id": "x9"},
    )


# roles


@pytest.mark.parametrize(("speaker", "role"), sorted(ROLE_ALIASES.items()))
def test_every_alias(tmp_path: Path, speaker: str, role: str) -> None:
    record = {"conversations": [{"from": speaker.upper(), "value": "text"}]}
    [conversation] = read_records_ok(write_text(tmp_path / "a.json", json.dumps(record)))
    assert conversation.messages == [{"role": role, "content": "text"}]


def test_system_and_tool_messages_are_kept_in_place(tmp_path: Path) -> None:
    record = {
        "conversations": [
            {"from": "system", "value": "s"},
            {"from": "gpt", "value": "starts on the assistant"},
            {"from": "function", "value": "f"},
            {"from": "observation", "value": "o"},
            {"from": "gpt", "value": "same role twice"},
        ]
    }
    [conversation] = read_records_ok(write_text(tmp_path / "t.json", json.dumps(record)))
    roles = [m["role"] for m in conversation.messages]
    assert roles == ["system", "assistant", "tool", "tool", "assistant"]


def test_unknown_role_fails_the_record_and_names_the_fix(tmp_path: Path) -> None:
    rows = [
        SHAREGPT,
        {"conversations": [{"from": "human", "value": "a"}, {"from": "Narrator", "value": "b"}]},
    ]
    path = write_text(tmp_path / "r.jsonl", "\n".join(json.dumps(r) for r in rows))
    record = bad_record(path)
    assert record.source == f"{path} line 2"
    assert record.problem == (
        "message at index 1 has unknown role 'Narrator'; "
        "add --role-map narrator=ROLE (ROLE: user, assistant, system, tool)"
    )
    mapped = records(path, role_map=parse_role_map(["Narrator=assistant"]))
    assert [m["role"] for m in mapped[1].messages] == ["user", "assistant"]


def test_role_map_overrides_an_alias(tmp_path: Path) -> None:
    path = write_text(tmp_path / "o.json", json.dumps(SHAREGPT))
    [conversation] = records(path, role_map={"system": "user"})
    assert conversation.messages[0]["role"] == "user"


@pytest.mark.parametrize(
    ("pairs", "problem"),
    [(["bot"], "expected FROM=TO"), (["=user"], "expected FROM=TO"), (["a=robot"], "TO must be")],
)
def test_bad_role_map(pairs: list[str], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_role_map(pairs)


def test_non_string_role(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "r.json", json.dumps({"conversation": [{"role": 3, "content": "a"}]})
    )
    assert bad_record(path).problem == "message at index 0 has unknown role 3"


# content


def test_content_parts_join_text_and_skip_other_parts(tmp_path: Path) -> None:
    parts = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
        {"type": "input_text", "text": "this picture"},
    ]
    record = {
        "messages": [
            {"role": "user", "content": parts},
            {"role": "assistant", "content": [{"type": "text", "text": "nice"}], "name": "bot"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "c"}]},
        ]
    }
    [conversation] = read_records_ok(write_text(tmp_path / "o.json", json.dumps(record)))
    assert conversation.messages == [
        {"role": "user", "content": "look at\nthis picture"},
        {"role": "assistant", "content": "nice"},
    ]


def test_empty_messages_are_dropped(tmp_path: Path) -> None:
    record = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "  \n"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u"}}]},
            {"role": "assistant", "content": "ok"},
        ]
    }
    [conversation] = read_records_ok(write_text(tmp_path / "e.json", json.dumps(record)))
    assert conversation.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "ok"},
    ]


@pytest.mark.parametrize(
    "record",
    [
        {"conversations": []},
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": " "}]},
        {"conversation": [{"role": "user", "content": None}]},
    ],
)
def test_a_record_without_text_is_empty_not_bad(tmp_path: Path, record: dict[str, Any]) -> None:
    path = write_text(tmp_path / "e.jsonl", f"{json.dumps(OPENAI)}\n{json.dumps(record)}\n")
    found = records(path)
    assert isinstance(found[0], SourceConversation)
    assert found[1] == EmptyRecord(f"{path} line 2")


def test_utf8_bom_and_non_ascii_are_read(tmp_path: Path) -> None:
    record = {"messages": [{"role": "user", "content": "机器学习"}]}
    for name, text in (
        ("bom.json", json.dumps(record, ensure_ascii=False)),
        ("bom.jsonl", json.dumps(record, ensure_ascii=False) + "\n" + json.dumps(record)),
    ):
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        assert read_records_ok(path)[0].messages == [{"role": "user", "content": "机器学习"}]


def test_accepts_str_path(tmp_path: Path) -> None:
    path = write_text(tmp_path / "s.json", json.dumps(OPENAI))
    [conversation] = read_records_ok(str(path))
    assert conversation.source == str(path)


# reading: errors of whole files


def test_missing_file(tmp_path: Path) -> None:
    input_error(tmp_path / "nope.json", "no such file")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()
    input_error(tmp_path / "dir.json", "is a directory")


def test_not_utf8_single_object(tmp_path: Path) -> None:
    path = tmp_path / "latin.json"
    path.write_bytes(b'{\n"messages": "caf\xe9"}')
    error = input_error(path, "not UTF-8")
    assert "0xe9" in error.problem and "line 2" in error.problem


@pytest.mark.parametrize("text", ["", "  \n\n", "\ufeff"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    input_error(write_text(tmp_path / "empty.json", text), "empty file")


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = write_text(tmp_path / "bad.json", '{\n  "messages": [\n    {"role": "user" "x"}]}')
    error = input_error(path, "not valid JSON")
    assert error.problem == "not valid JSON (line 3, column 21: Expecting ',' delimiter)"


def test_trailing_garbage_after_pretty_json_is_a_json_error(tmp_path: Path) -> None:
    path = write_text(tmp_path / "bad.json", json.dumps(OPENAI, indent=2) + "\nxyz")
    error = input_error(path, "not valid JSON")
    assert "Extra data" in error.problem


def test_empty_array(tmp_path: Path) -> None:
    input_error(write_text(tmp_path / "a.json", " [ ]"), "an empty JSON array, no conversations")


# reading: errors of one record, the others go on


def test_bad_json_line_fails_alone(tmp_path: Path) -> None:
    line = json.dumps(OPENAI)
    path = write_text(tmp_path / "bad.jsonl", f"{line}\n\n{line}\n{{oops\n{line}\n")
    found = records(path)
    assert [type(r).__name__ for r in found] == ["SourceConversation"] * 2 + [
        "BadRecord",
        "SourceConversation",
    ]
    assert found[2].source == f"{path} line 4"
    assert found[2].problem.startswith("not valid JSON (column 2")


def test_not_utf8_line_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(
        json.dumps(OPENAI).encode() + b'\n{"x": "caf\xe9"}\n' + json.dumps(OPENAI).encode()
    )
    record = bad_record(path)
    assert (
        record.source == f"{path} line 2"
        and "not UTF-8" in record.problem
        and "0xe9" in record.problem
    )
    assert len(records(path)) == 3


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("42", "a JSON number; expected a graph-distill conversation"),
        ('"hi"', "a JSON string; expected"),
        ("null", "a JSON null; expected"),
        (
            '{"foo": 1}',
            'not a recognised conversation; expected a graph-distill conversation {"conv',
        ),
        (
            '{"messages": {"role": "user"}}',
            "'messages' is a JSON object, expected a list of messages",
        ),
        ('{"conversation": "hi"}', "'conversation' is a JSON string, expected a list"),
    ],
)
def test_wrong_shape(tmp_path: Path, text: str, problem: str) -> None:
    record = bad_record(write_text(tmp_path / "shape.json", text))
    assert problem in record.problem


def test_bad_element_of_a_list_is_named_by_its_index(tmp_path: Path) -> None:
    path = write_text(tmp_path / "l.json", json.dumps([OPENAI, 7, OPENAI]))
    record = bad_record(path)
    assert (record.source, record.problem.split(";")[0]) == (f"{path} record 1", "a JSON number")
    assert len(read_records_ok(path)) == 2


def read_records_ok(path: Path) -> list[SourceConversation]:
    return [r for r in records(path) if isinstance(r, SourceConversation)]


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 5}]},
            "message at index 1: 'content' is a JSON number, not a string",
        ),
        (
            {"conversations": [{"from": "gpt", "value": {"a": 1}}]},
            "message at index 0: 'value' is a JSON object, not a string",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "message at index 0: text part 0 has no string 'text'",
        ),
        (
            {"messages": [{"role": "user", "content": [3]}]},
            "message at index 0: content part 0 has no 'type'",
        ),
        ({"messages": [{"role": "user"}]}, "message at index 0 has no 'content'"),
        ({"conversations": [{"value": "x"}]}, "message at index 0 has no 'role'"),
        ({"messages": ["hi"]}, "message at index 0 is a JSON string, not an object"),
    ],
)
def test_bad_message(tmp_path: Path, record: dict[str, Any], problem: str) -> None:
    assert bad_record(write_text(tmp_path / "c.json", json.dumps(record))).problem == problem


def test_read_conversation_reads_a_file_holding_one(tmp_path: Path) -> None:
    one = write_text(tmp_path / "one.json", json.dumps(OURS))
    assert read_conversation(one).messages == EXPECTED_MESSAGES
    empty = write_text(tmp_path / "e.json", json.dumps({"conversations": []}))
    with pytest.raises(InputError, match="no message has text"):
        read_conversation(empty)
    several = write_text(tmp_path / "l.json", json.dumps([OPENAI, OPENAI]))
    with pytest.raises(InputError, match="holds several conversations, expected one"):
        read_conversation(several)


def test_error_text_stays_on_one_line(tmp_path: Path) -> None:
    record = {"messages": [{"role": "a\nb", "content": "x"}]}
    assert (
        "unknown role" in bad_record(write_text(tmp_path / "nl.json", json.dumps(record))).problem
    )


def test_input_error_is_a_value_error() -> None:
    error = InputError("data/x.json", "empty file")
    assert isinstance(error, ValueError)
    assert str(error) == "data/x.json: empty file"


# JSON arrays, parsed incrementally


def test_truncated_array_keeps_every_record_before_the_cut(tmp_path: Path) -> None:
    rows = [{"id": f"r{n}", **SHAREGPT} for n in range(50)]
    text = json.dumps(rows, indent=2)
    path = write_text(tmp_path / "cut.json", text[: text.index('"r40"') + 20])
    found = records(path)
    assert [r.origin["id"] for r in found[:-1]] == [f"r{n}" for n in range(40)]
    cut = found[-1]
    assert isinstance(cut, BadRecord) and cut.source == f"{path} record 40"
    assert "truncated" in cut.problem and "line " in cut.problem


def test_broken_array_element_stops_the_file_there(tmp_path: Path) -> None:
    path = write_text(
        tmp_path / "b.json", "[" + json.dumps(OPENAI) + ", {oops}, " + json.dumps(OPENAI) + "]"
    )
    found = records(path)
    assert isinstance(found[0], SourceConversation) and len(found) == 2
    assert found[1].source == f"{path} record 1" and "not valid JSON" in found[1].problem


def test_array_records_larger_than_a_read(tmp_path: Path) -> None:
    big = "word " * 600_000  # 3 MB: several reads per record
    rows = [{"id": str(n), "conversations": [{"from": "human", "value": big}]} for n in range(3)]
    path = write_text(tmp_path / "big.json", json.dumps(rows))
    found = read_records_ok(path)
    assert [r.origin["id"] for r in found] == ["0", "1", "2"]
    assert all(r.messages[0]["content"] == big for r in found)


# find_inputs


def test_find_inputs_filters_and_sorts(tmp_path: Path) -> None:
    for name in [
        "b.json",
        "a.jsonl",
        "C.json",
        "notes.txt",
        ".hidden.json",
        "run_report.json",
        ".b.json.1a2b.tmp",
        "x.json.tmp",
        "distilled_a.json",
    ]:
        (tmp_path / name).write_text("{}")
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.json").write_text("{}")
    found = find_inputs(tmp_path)
    assert [p.name for p in found] == ["C.json", "a.jsonl", "b.json", "distilled_a.json"]
    assert all(p.parent == tmp_path for p in found)


def test_find_inputs_on_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such directory"):
        find_inputs(tmp_path / "missing")
    with pytest.raises(InputError, match="not a directory"):
        find_inputs(write_text(tmp_path / "f.json", "{}"))


# atomic writes


def test_write_json_atomic_writes_utf8_indented_json(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "out.json"
    data = {"b": "机器", "a": [1, 2]}
    write_json_atomic(target, data)
    raw = target.read_bytes().decode("utf-8")
    assert raw == json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    assert "机器" in raw
    assert files_in(target.parent) == ["out.json"]


def test_write_json_atomic_replaces_by_default(tmp_path: Path) -> None:
    target = write_text(tmp_path / "out.json", "old")
    write_json_atomic(target, {"new": True})
    assert json.loads(target.read_text()) == {"new": True}
    assert files_in(tmp_path) == ["out.json"]


def test_write_json_atomic_follows_umask_not_temp_file_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    write_json_atomic(target, {})
    current_umask = os.umask(0o022)
    os.umask(current_umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~current_umask


@pytest.mark.parametrize("overwrite", [True, False])
def test_enospc_during_fsync_leaves_no_temp_and_old_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overwrite: bool
) -> None:
    target = write_text(tmp_path / "out.json", "old")
    other = tmp_path / "fresh.json"

    def disk_full(descriptor: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    for path in (target, other):
        with pytest.raises(OSError) as caught:
            write_json_atomic(path, {"new": True}, overwrite=overwrite)
        assert caught.value.errno == errno.ENOSPC
    assert files_in(tmp_path) == ["out.json"]
    assert target.read_text() == "old"


def test_enospc_during_write_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_text(tmp_path / "out.json", "old")
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, stream: Any) -> None:
            self.stream = stream

        def __enter__(self) -> FullDisk:
            return self

        def __exit__(self, *exc: object) -> None:
            self.stream.close()

        def write(self, text: str) -> int:
            self.stream.write(text[:10])
            self.stream.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda *a, **k: FullDisk(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match="No space left"):
        write_json_atomic(target, {"new": "x" * 100})
    assert files_in(tmp_path) == ["out.json"]
    assert target.read_text() == "old"


def test_failed_replace_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = write_text(tmp_path / "out.json", "old")

    def refuse(source: Any, destination: Any) -> None:
        raise PermissionError(errno.EACCES, "denied")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(PermissionError):
        write_json_atomic(target, {"new": True})
    assert files_in(tmp_path) == ["out.json"]
    assert target.read_text() == "old"


@pytest.mark.parametrize("value", [{"x": object()}, {"x": float("nan")}])
def test_unserialisable_value_leaves_target_untouched(tmp_path: Path, value: Any) -> None:
    target = write_text(tmp_path / "out.json", "old")
    with pytest.raises((TypeError, ValueError)):
        write_json_atomic(target, value)
    assert files_in(tmp_path) == ["out.json"]
    assert target.read_text() == "old"


def test_overwrite_false_never_replaces(tmp_path: Path) -> None:
    target = write_text(tmp_path / "out.json", "old")
    with pytest.raises(FileExistsError):
        write_json_atomic(target, {"new": True}, overwrite=False)
    assert target.read_text() == "old"
    assert files_in(tmp_path) == ["out.json"]
    fresh = tmp_path / "fresh.json"
    write_json_atomic(fresh, [1], overwrite=False)
    assert json.loads(fresh.read_text()) == [1]
    assert files_in(tmp_path) == ["fresh.json", "out.json"]


def test_overwrite_false_does_not_follow_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "elsewhere.json")
    with pytest.raises(FileExistsError):
        write_json_atomic(link, {}, overwrite=False)
    assert not (tmp_path / "elsewhere.json").exists()


# conversation names


def test_reserve_conversation_path_names_and_suffixes(tmp_path: Path) -> None:
    first = reserve_conversation_path(tmp_path, "MachineLearning", WHEN)
    assert first == tmp_path / "MachineLearning_20260111_194332.json"
    assert not first.exists()
    first.write_text("{}")
    assert reserve_conversation_path(tmp_path, "MachineLearning", WHEN).name == (
        "MachineLearning_20260111_194332_2.json"
    )


def test_write_new_conversation_adds_suffixes(tmp_path: Path) -> None:
    directory = tmp_path / "conversations"
    paths = [write_new_conversation(directory, "Python", WHEN, {"n": n}) for n in range(4)]
    assert [p.name for p in paths] == [
        "Python_20260111_194332.json",
        "Python_20260111_194332_2.json",
        "Python_20260111_194332_3.json",
        "Python_20260111_194332_4.json",
    ]
    assert [json.loads(p.read_text()) for p in paths] == [{"n": n} for n in range(4)]
    assert files_in(directory) == sorted(p.name for p in paths)


def test_write_new_conversation_retries_when_a_name_is_taken_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import graph_distill.files.writing as formats

    real_reserve = formats.reserve_conversation_path

    def racing_reserve(directory: Path, key: str, when: datetime) -> Path:
        path = real_reserve(directory, key, when)
        if path.name == "Python_20260111_194332.json":
            path.write_text("theirs")
        return path

    monkeypatch.setattr(formats, "reserve_conversation_path", racing_reserve)
    path = write_new_conversation(tmp_path, "Python", WHEN, {"mine": True})
    assert path.name == "Python_20260111_194332_2.json"
    assert (tmp_path / "Python_20260111_194332.json").read_text() == "theirs"
    assert json.loads(path.read_text()) == {"mine": True}
    assert files_in(tmp_path) == ["Python_20260111_194332.json", "Python_20260111_194332_2.json"]


@pytest.mark.parametrize("key", ["", "a/b", "..", ".hidden"])
def test_unusable_scenario_key(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValueError, match="cannot be used in a file name"):
        reserve_conversation_path(tmp_path, key, WHEN)


def test_distilled_path(tmp_path: Path) -> None:
    assert distilled_path(tmp_path, "ML_20260111_194332") == (
        tmp_path / "distilled_ML_20260111_194332.json"
    )


# produced dicts


def conversation_record(**changes: Any) -> dict[str, Any]:
    record = {
        "metadata": {"seed": 1},
        "created_at": "2026-01-11T19:43:32",
        "total_rounds": 2,
        "conversation": [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2"},
        ],
        "scenario": SCENARIO,
        "id": "abc",
    }
    record.update(changes)
    return record


def test_conversation_file_orders_keys() -> None:
    produced = conversation_file(conversation_record())
    assert list(produced) == [
        "id",
        "scenario",
        "conversation",
        "total_rounds",
        "created_at",
        "metadata",
    ]
    assert produced == conversation_record()


def test_conversation_file_keeps_extra_keys_last() -> None:
    produced = conversation_file({"extra": 1, **conversation_record()})
    assert list(produced)[-1] == "extra"


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"conversation": []}, "non-empty list"),
        ({"conversation": [{"role": "assistant", "content": "a"}]}, "message 0 must be a user"),
        (
            {"conversation": [{"role": "user", "content": "q"}, {"role": "user", "content": "q"}]},
            "message 1 must be an assistant",
        ),
        (
            {
                "conversation": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a"},
                    {"role": "user", "content": "q"},
                ]
            },
            "end with an assistant",
        ),
        (
            {
                "conversation": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": " "},
                ]
            },
            "message 1 is empty",
        ),
        (
            {
                "conversation": [
                    {"role": "user", "content": None},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "message 0 is empty",
        ),
        ({"conversation": ["q", "a"]}, "message 0 must be a user"),
        ({"total_rounds": 3}, "total_rounds is 3, but the conversation has 2"),
        ({"total_rounds": "2"}, "total_rounds is '2'"),
    ],
)
def test_conversation_file_invariants(changes: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        conversation_file(conversation_record(**changes))


def test_conversation_file_requires_every_contract_key() -> None:
    record = conversation_record()
    del record["id"], record["metadata"]
    with pytest.raises(ValueError, match="lacks id, metadata"):
        conversation_file(record)


def test_distilled_file_order_and_count() -> None:
    chunks = [{"chunk_index": 0}, {"chunk_index": 1}]
    produced = distilled_file(
        source="conversations/x.json",
        distilled_chunks=chunks,
        final_summary="Overall",
        final_notes=None,
        metadata={"model": "m"},
    )
    assert list(produced) == [
        "source",
        "total_chunks",
        "distilled_chunks",
        "final_summary",
        "final_notes",
        "metadata",
    ]
    assert produced["total_chunks"] == 2
    assert produced["distilled_chunks"] == chunks
    assert produced["final_notes"] is None


def test_conversation_written_and_read_back(tmp_path: Path) -> None:
    path = write_new_conversation(tmp_path, "ML", WHEN, conversation_file(conversation_record()))
    assert list(json.loads(path.read_text())) == list(conversation_file(conversation_record()))
    [conversation] = read_records_ok(path)
    assert conversation.record == conversation_record()
    assert conversation.messages == conversation_record()["conversation"]
    assert conversation.stem == "ML_20260111_194332"


# Parquet, as Hugging Face datasets store chats


def write_parquet(path: Path, rows: list[dict[str, Any]]) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=7)
    return path


def test_parquet_messages_column_with_ids(tmp_path: Path) -> None:
    rows = [
        {
            "id": f"hf-{n}",
            "messages": [
                {"role": "user", "content": f"question {n}"},
                {"role": "assistant", "content": f"answer {n}"},
            ],
            "image": b"\x00" * 10,
        }
        for n in range(40)
    ]
    rows[5]["messages"] = []
    path = write_parquet(tmp_path / "train.parquet", rows)
    found = records(path)
    assert found[5] == EmptyRecord(f"{path} row 5 (id hf-5)")
    kept = [r for r in found if isinstance(r, SourceConversation)]
    assert len(kept) == 39
    assert kept[0].origin == {"path": str(path), "index": 0, "id": "hf-0"}
    assert kept[-1].messages[1] == {"role": "assistant", "content": "answer 39"}


def test_parquet_sharegpt_column(tmp_path: Path) -> None:
    rows = [{"conversations": [{"from": "human", "value": "q"}, {"from": "bard", "value": "a"}]}]
    path = write_parquet(tmp_path / "s.parquet", rows * 2)
    assert [r.stem for r in read_records_ok(path)] == ["s_0", "s_1"]


def test_parquet_without_a_conversation_column(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "x.parquet", [{"text": "hello"}])
    input_error(path, "no 'conversations' or 'messages' or 'conversation' column (columns: text)")


def test_parquet_without_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "none.parquet"
    pq.write_table(pa.table({"messages": pa.array([], pa.list_(pa.string()))}), path)
    input_error(path, "no records")


def test_find_inputs_includes_parquet(tmp_path: Path) -> None:
    (tmp_path / "a.parquet").write_bytes(b"PAR1")
    (tmp_path / "b.csv").write_text("x")
    assert [p.name for p in find_inputs(tmp_path)] == ["a.parquet"]
