"""Rows of the export formats, one conversation at a time: ShareGPT, OpenAI chat, a Parquet
table, and summary training pairs (conversation -> final summary, chunk -> notes)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

FORMATS = ("sharegpt", "openai", "parquet", "summaries")
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}


class Exportable(Protocol):
    """What an export needs of a conversation (the report's dataset reader gives these)."""

    key: str
    source: str
    messages: list[dict[str, str]]
    distilled: dict[str, Any] | None

    @property
    def id(self) -> str: ...

    @property
    def scenario(self) -> str: ...

    @property
    def rounds(self) -> int: ...

    @property
    def metadata(self) -> dict[str, Any]: ...

    def noise(self) -> dict[int, dict[str, Any]]: ...

    def clean_messages(self) -> list[dict[str, str]]: ...


def messages_of(conversation: Exportable, clean: bool) -> list[dict[str, str]]:
    """The messages as written, or with noised user turns back to their clean text."""
    chosen = conversation.clean_messages() if clean else conversation.messages
    return [{"role": m["role"], "content": m["content"]} for m in chosen]


def sharegpt_row(conversation: Exportable, clean: bool) -> dict[str, Any]:
    return {
        "id": conversation.id,
        "conversations": [
            {"from": SHAREGPT_ROLES[m["role"]], "value": m["content"]}
            for m in messages_of(conversation, clean)
        ],
    }


def openai_row(conversation: Exportable, clean: bool) -> dict[str, Any]:
    return {"messages": messages_of(conversation, clean)}


def table_row(conversation: Exportable, clean: bool) -> dict[str, Any]:
    """One row of the Parquet table."""
    distilled = conversation.distilled or {}
    return {
        "id": conversation.id,
        "source": conversation.source,
        "scenario": conversation.scenario,
        "rounds": conversation.rounds,
        "termination_reason": conversation.metadata.get("termination_reason"),
        "messages": messages_of(conversation, clean),
        "final_summary": distilled.get("final_summary"),
    }


def summary_rows(conversation: Exportable, clean: bool) -> Iterator[dict[str, Any]]:
    """Training pairs: the conversation -> its final summary, and each distilled chunk -> its
    notes (chunks kept raw give none)."""
    distilled = conversation.distilled or {}
    if distilled.get("final_summary"):
        yield _pair(
            f"{conversation.id}/summary",
            conversation,
            messages_of(conversation, clean),
            distilled["final_summary"],
            "conversation_summary",
        )
    replacements = _clean_texts(conversation) if clean else {}
    for chunk in distilled.get("distilled_chunks") or []:
        if chunk.get("status", "ok") != "ok" or not chunk.get("distilled_content"):
            continue
        messages = [
            {"role": m["role"], "content": replacements.get(m["content"], m["content"])}
            for m in chunk.get("original_messages") or []
        ]
        yield _pair(
            f"{conversation.id}/chunk-{chunk.get('chunk_index')}",
            conversation,
            messages,
            chunk["distilled_content"],
            "chunk_notes",
        )


def _pair(
    row_id: str,
    conversation: Exportable,
    messages: Sequence[dict[str, str]],
    output: str,
    kind: str,
) -> dict[str, Any]:
    return {
        "id": row_id,
        "source": conversation.source,
        "input": list(messages),
        "output": output,
        "kind": kind,
    }


def _clean_texts(conversation: Exportable) -> dict[str, str]:
    """Noised text -> clean text, for chunk messages (which carry no turn numbers of their own)."""
    return {
        conversation.messages[turn]["content"]: noise["clean"]
        for turn, noise in conversation.noise().items()
        if turn < len(conversation.messages)
    }


def rows_of(conversation: Exportable, export_format: str, clean: bool) -> list[dict[str, Any]]:
    if export_format == "sharegpt":
        return [sharegpt_row(conversation, clean)]
    if export_format == "openai":
        return [openai_row(conversation, clean)]
    if export_format == "parquet":
        return [table_row(conversation, clean)]
    if export_format == "summaries":
        return list(summary_rows(conversation, clean))
    raise ValueError(f"unknown export format {export_format!r}")
