"""The output files: their names, their layout, and safe, atomic writing (never half a file,
never over another run's file)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator, Mapping
from datetime import datetime
from itertools import count
from pathlib import Path
from typing import Any, Literal, NotRequired

from typing_extensions import TypedDict

RUN_REPORT_NAME = "run_report.json"


TEMP_SUFFIX = ".tmp"


class ChatMessage(TypedDict):
    role: Literal["user", "assistant"]
    content: str


class ConversationMetadata(TypedDict):
    model: str
    user_model: str
    scenario_key: str
    seed: int
    target_rounds: int
    termination_reason: Literal["target_rounds", "stalled"]
    topic_switches: list[dict[str, Any]]
    role_breaks: list[dict[str, Any]]
    noise: list[dict[str, Any]]
    usage: dict[str, Any]
    stall: NotRequired[dict[str, Any]]


class ConversationRecord(TypedDict):
    """A conversation file, as the conversation graph's end guard builds it (key order is
    the contract's)."""

    id: str
    scenario: dict[str, Any]
    conversation: list[ChatMessage]
    total_rounds: int
    created_at: str
    metadata: ConversationMetadata


CONVERSATION_KEYS = tuple(ConversationRecord.__annotations__)


def write_json_atomic(path: Path, data: Any, *, overwrite: bool = True) -> None:
    """Write ``data`` as JSON all at once or not at all; with ``overwrite=False`` an existing
    file is never replaced (FileExistsError)."""
    path = Path(path)
    text = json.dumps(data, ensure_ascii=False, indent=2, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = _create_temp(path)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        _move_into_place(temp, path, overwrite=overwrite)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def ensure_writable_dir(directory: Path) -> None:
    """Create ``directory`` if needed and prove a file can be made in it (OSError if not), so
    that a run fails before it pays for work it could not keep."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    descriptor, probe = _create_temp(directory / "write-probe")
    os.close(descriptor)
    probe.unlink()


def reserve_conversation_path(directory: Path, scenario_key: str, when: datetime) -> Path:
    """The first free ``<ScenarioKey>_<YYYYmmdd_HHMMSS>[_<n>].json`` name in ``directory``.

    Nothing is created; write with ``overwrite=False`` (see write_new_conversation) so that a
    name taken in the meantime is never overwritten."""
    return next(
        path
        for path in _conversation_names(Path(directory), scenario_key, when)
        if not os.path.lexists(path)
    )


def write_new_conversation(directory: Path, scenario_key: str, when: datetime, data: Any) -> Path:
    """Write ``data`` under the first free conversation name, never overwriting; its path."""
    while True:
        candidate = reserve_conversation_path(directory, scenario_key, when)
        if write_if_free(candidate, data):
            return candidate


def write_if_free(path: Path, data: Any) -> bool:
    """Write ``data`` at ``path`` unless a file took that name meanwhile (then False)."""
    try:
        write_json_atomic(path, data, overwrite=False)
    except FileExistsError:
        if not os.path.lexists(path):
            raise
        return False
    return True


def distilled_path(output_dir: Path, source_stem: str) -> Path:
    return Path(output_dir) / f"distilled_{source_stem}.json"


def conversation_file(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record with the contract's key order (extra keys follow); ValueError when it lacks
    a key or breaks the conversation invariants."""
    missing = [key for key in CONVERSATION_KEYS if key not in record]
    if missing:
        raise ValueError(f"conversation record lacks {', '.join(missing)}")
    _check_conversation(record["conversation"], record["total_rounds"])
    ordered = {key: record[key] for key in CONVERSATION_KEYS}
    ordered.update((key, value) for key, value in record.items() if key not in ordered)
    return ordered


def distilled_file(
    *,
    source: str,
    distilled_chunks: list[dict[str, Any]],
    final_summary: str,
    final_notes: dict[str, Any] | None,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    return {
        "source": source,
        "total_chunks": len(distilled_chunks),
        "distilled_chunks": distilled_chunks,
        "final_summary": final_summary,
        "final_notes": final_notes,
        "metadata": metadata,
    }


def _create_temp(target: Path) -> tuple[int, Path]:
    """A new hidden temp file beside ``target``, created with the umask's usual permissions."""
    while True:
        temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temp
        except FileExistsError:
            continue


def _move_into_place(temp: Path, target: Path, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(temp, target)
        return
    os.link(temp, target)
    os.unlink(temp)


def _conversation_names(directory: Path, scenario_key: str, when: datetime) -> Iterator[Path]:
    if not scenario_key or scenario_key.startswith(".") or Path(scenario_key).name != scenario_key:
        raise ValueError(f"scenario key {scenario_key!r} cannot be used in a file name")
    base = f"{scenario_key}_{when:%Y%m%d_%H%M%S}"
    yield directory / f"{base}.json"
    for number in count(2):
        yield directory / f"{base}_{number}.json"


def _check_conversation(conversation: Any, total_rounds: Any) -> None:
    if not isinstance(conversation, list) or not conversation:
        raise ValueError("conversation must be a non-empty list of messages")
    for index, message in enumerate(conversation):
        expected = "user" if index % 2 == 0 else "assistant"
        if not isinstance(message, Mapping) or message.get("role") != expected:
            article = "a" if expected == "user" else "an"
            raise ValueError(f"conversation message {index} must be {article} {expected} message")
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"conversation message {index} is empty")
    if len(conversation) % 2:
        raise ValueError("conversation must end with an assistant message")
    rounds = len(conversation) // 2
    if type(total_rounds) is not int or total_rounds != rounds:
        raise ValueError(f"total_rounds is {total_rounds!r}, but the conversation has {rounds}")
