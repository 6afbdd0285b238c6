from __future__ import annotations

import errno
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from graph_distill.files.readers import (
    InputError,
    SourceConversation,
    find_inputs,
    read_conversations,
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


def input_error(path: Path, problem_part: str) -> InputError:
    with pytest.raises(InputError) as caught:
        read_conversations(path)
    error = caught.value
    assert str(error) == f"{path}: {error.problem}"
    assert "\n" not in str(error)
    assert error.path == str(path)
    assert problem_part in error.problem, error.problem
    return error


def files_in(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# reading: every format in every container


@pytest.mark.parametrize(("record", "is_ours"), [(OURS, True), (SHAREGPT, False), (OPENAI, False)])
def test_single_json_object(tmp_path: Path, record: dict[str, Any], is_ours: bool) -> None:
    path = write_text(tmp_path / "chat.json", json.dumps(record))
    [conversation] = read_conversations(path)
    assert conversation == SourceConversation(
        source=str(path), stem="chat", messages=EXPECTED_MESSAGES, record=OURS if is_ours else None
    )


@pytest.mark.parametrize("record", [OURS, SHAREGPT, OPENAI])
def test_json_list_numbers_sources_and_stems(tmp_path: Path, record: dict[str, Any]) -> None:
    path = write_text(tmp_path / "many.json", json.dumps([record] * 10))
    conversations = read_conversations(path)
    assert [c.source for c in conversations] == [f"{path}#{n}" for n in range(1, 11)]
    assert [c.stem for c in conversations] == [f"many_{n:02d}" for n in range(1, 11)]
    assert all(c.messages == EXPECTED_MESSAGES for c in conversations)


@pytest.mark.parametrize("record", [OURS, SHAREGPT, OPENAI])
def test_json_lines_with_blank_lines(tmp_path: Path, record: dict[str, Any]) -> None:
    line = json.dumps(record)
    path = write_text(tmp_path / "lines.jsonl", f"{line}\n\n{line}\r\n{line}\n\n")
    conversations = read_conversations(path)
    assert [c.stem for c in conversations] == ["lines_1", "lines_2", "lines_3"]
    assert [c.source for c in conversations] == [f"{path}#{n}" for n in (1, 2, 3)]
    assert all(c.messages == EXPECTED_MESSAGES for c in conversations)
    assert all(c.record == (record if record is OURS else None) for c in conversations)


def test_formats_may_be_mixed_in_one_list(tmp_path: Path) -> None:
    path = write_text(tmp_path / "mixed.json", json.dumps([OURS, SHAREGPT, OPENAI]))
    conversations = read_conversations(path)
    assert [c.messages for c in conversations] == [EXPECTED_MESSAGES] * 3
    assert [c.record is not None for c in conversations] == [True, False, False]


def test_detection_is_by_content_not_suffix(tmp_path: Path) -> None:
    lines = write_text(tmp_path / "lines.json", f"{json.dumps(OPENAI)}\n{json.dumps(SHAREGPT)}\n")
    assert [c.stem for c in read_conversations(lines)] == ["lines_1", "lines_2"]
    pretty = write_text(tmp_path / "pretty.jsonl", json.dumps(OURS, indent=2))
    [conversation] = read_conversations(pretty)
    assert (conversation.stem, conversation.source) == ("pretty", str(pretty))


def test_single_element_list_is_not_numbered(tmp_path: Path) -> None:
    path = write_text(tmp_path / "one.json", json.dumps([OPENAI]))
    [conversation] = read_conversations(path)
    assert (conversation.source, conversation.stem) == (str(path), "one")


def test_original_format_record_is_kept_whole(tmp_path: Path) -> None:
    record = {**OURS, "id": "abc", "metadata": {"seed": 1}, "extra": [1, 2]}
    path = write_text(tmp_path / "x.json", json.dumps(record, ensure_ascii=False))
    [conversation] = read_conversations(path)
    assert conversation.record == record


def test_sharegpt_role_mapping_accepts_user_and_assistant_spellings(tmp_path: Path) -> None:
    record = {
        "conversations": [
            {"from": "user", "value": "a"},
            {"from": "assistant", "value": "b"},
            {"from": "human", "value": "c"},
            {"from": "gpt", "value": "d"},
        ]
    }
    [conversation] = read_conversations(write_text(tmp_path / "s.json", json.dumps(record)))
    assert [m["role"] for m in conversation.messages] == ["user", "assistant"] * 2
    assert [m["content"] for m in conversation.messages] == ["a", "b", "c", "d"]


def test_openai_content_parts_join_text_and_skip_other_parts(tmp_path: Path) -> None:
    parts = [
        {"type": "text", "text": "look at"},
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}},
        {"type": "text", "text": "this picture"},
    ]
    record = {
        "messages": [
            {"role": "user", "content": parts},
            {"role": "assistant", "content": [{"type": "text", "text": "nice"}], "name": "bot"},
        ]
    }
    [conversation] = read_conversations(write_text(tmp_path / "o.json", json.dumps(record)))
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
    [conversation] = read_conversations(write_text(tmp_path / "e.json", json.dumps(record)))
    assert conversation.messages == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "ok"},
    ]


def test_utf8_bom_and_non_ascii_are_read(tmp_path: Path) -> None:
    record = {"messages": [{"role": "user", "content": "机器学习"}]}
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(record, ensure_ascii=False).encode())
    [conversation] = read_conversations(path)
    assert conversation.messages == [{"role": "user", "content": "机器学习"}]


def test_accepts_str_path(tmp_path: Path) -> None:
    path = write_text(tmp_path / "s.json", json.dumps(OPENAI))
    [conversation] = read_conversations(str(path))
    assert conversation.source == str(path)


# reading: errors


def test_missing_file(tmp_path: Path) -> None:
    input_error(tmp_path / "nope.json", "no such file")


def test_directory(tmp_path: Path) -> None:
    (tmp_path / "dir.json").mkdir()
    input_error(tmp_path / "dir.json", "is a directory")


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.json"
    path.write_bytes(b'{"messages": []}\n{"x": "caf\xe9"}')
    error = input_error(path, "not UTF-8")
    assert "0xe9" in error.problem and "line 2" in error.problem


@pytest.mark.parametrize("text", ["", "  \n\n"])
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


def test_bad_json_line_names_its_line_number(tmp_path: Path) -> None:
    line = json.dumps(OPENAI)
    path = write_text(tmp_path / "bad.jsonl", f"{line}\n\n{line}\n{{oops\n")
    error = input_error(path, "line 4: not valid JSON")
    assert "column 2" in error.problem


@pytest.mark.parametrize(
    ("text", "problem_part"),
    [
        ("42", "a JSON number; expected a graph-distill conversation"),
        ('"hi"', "a JSON string; expected"),
        ("null", "a JSON null; expected"),
        ("[]", "an empty JSON array, no conversations"),
        (
            '{"foo": 1}',
            'not a recognised conversation; expected a graph-distill conversation {"conv',
        ),
        ('[{"messages": [{"role": "user", "content": "x"}]}, 7]', "conversation 2: a JSON number"),
        (
            '{"messages": {"role": "user"}}',
            "'messages' is a JSON object, expected a list of messages",
        ),
        ('{"conversation": "hi"}', "'conversation' is a JSON string, expected a list"),
    ],
)
def test_wrong_shape(tmp_path: Path, text: str, problem_part: str) -> None:
    input_error(write_text(tmp_path / "shape.json", text), problem_part)


@pytest.mark.parametrize("key", ["conversation", "conversations", "messages"])
def test_no_messages(tmp_path: Path, key: str) -> None:
    error = input_error(write_text(tmp_path / "n.json", json.dumps({key: []})), "no messages")
    assert error.problem == "no messages"


def test_no_messages_in_a_json_line_names_the_line(tmp_path: Path) -> None:
    path = write_text(tmp_path / "n.jsonl", json.dumps(OPENAI) + "\n" + '{"messages": []}\n')
    error = input_error(path, "line 2: no messages")
    assert error.problem == "line 2: no messages"


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "b"}]},
            "message at index 1 has unknown role 'tool' (expected user, assistant, system)",
        ),
        (
            {"messages": [{"role": "function", "content": "b"}]},
            "message at index 0 has unknown role 'function' (expected user, assistant, system)",
        ),
        (
            {"conversations": [{"from": "human", "value": "a"}, {"from": "bing", "value": "b"}]},
            "message at index 1 has unknown role 'bing' "
            "(expected human, user, gpt, assistant, system)",
        ),
        (
            {"conversation": [{"role": 3, "content": "a"}]},
            "message at index 0 has unknown role 3 (expected user, assistant, system)",
        ),
    ],
)
def test_unknown_role(tmp_path: Path, record: dict[str, Any], problem: str) -> None:
    error = input_error(write_text(tmp_path / "r.json", json.dumps(record)), "unknown role")
    assert error.problem == problem


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": 5}]},
            "message at index 1: 'content' is a JSON number, not a string",
        ),
        (
            {"messages": [{"role": "assistant", "content": None}]},
            "message at index 0: 'content' is a JSON null, not a string",
        ),
        (
            {"conversations": [{"from": "gpt", "value": ["a"]}]},
            "message at index 0: 'value' is a JSON array, not a string",
        ),
        (
            {"conversation": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]},
            "message at index 0: 'content' is a JSON array, not a string",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "message at index 0: text part 0 has no string 'text'",
        ),
        (
            {"messages": [{"role": "user", "content": ["plain"]}]},
            "message at index 0: content part 0 has no 'type'",
        ),
        ({"messages": [{"role": "user"}]}, "message at index 0 has no 'content'"),
        ({"conversations": [{"value": "x"}]}, "message at index 0 has no 'from'"),
        ({"messages": ["hi"]}, "message at index 0 is a JSON string, not an object"),
    ],
)
def test_bad_message(tmp_path: Path, record: dict[str, Any], problem: str) -> None:
    error = input_error(write_text(tmp_path / "c.json", json.dumps(record)), "message at index")
    assert error.problem == problem


def test_all_messages_empty(tmp_path: Path) -> None:
    record = {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": " "}]}
    error = input_error(write_text(tmp_path / "e.json", json.dumps(record)), "all messages")
    assert error.problem == "all messages are empty"


def test_problem_in_list_element_names_the_conversation(tmp_path: Path) -> None:
    bad = {"messages": [{"role": "tool", "content": "x"}]}
    path = write_text(tmp_path / "l.json", json.dumps([OPENAI, OPENAI, bad]))
    input_error(path, "conversation 3: message at index 0 has unknown role 'tool'")


def test_error_text_stays_on_one_line(tmp_path: Path) -> None:
    record = {"messages": [{"role": "a\nb", "content": "x"}]}
    error = input_error(write_text(tmp_path / "nl.json", json.dumps(record)), "unknown role")
    assert "\n" not in str(error)


def test_input_error_is_a_value_error() -> None:
    error = InputError("data/x.json", "empty file")
    assert isinstance(error, ValueError)
    assert str(error) == "data/x.json: empty file"


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
    [conversation] = read_conversations(path)
    assert conversation.record == conversation_record()
    assert conversation.messages == conversation_record()["conversation"]
    assert conversation.stem == "ML_20260111_194332"
