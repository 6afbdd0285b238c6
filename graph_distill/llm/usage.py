"""Token usage of model calls: read from replies, summed through graph state."""

from __future__ import annotations

from collections.abc import Mapping

from langchain_core.messages import BaseMessage
from typing_extensions import TypedDict


class Usage(TypedDict):
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    calls: int


USAGE_KEYS = ("input_tokens", "output_tokens", "cached_tokens", "calls")


def empty_usage() -> Usage:
    return Usage(input_tokens=0, output_tokens=0, cached_tokens=0, calls=0)


def add_usage(left: Mapping[str, int] | None, right: Mapping[str, int] | None) -> Usage:
    """Reducer: field-wise sum (either side may be missing)."""
    left, right = left or {}, right or {}
    return Usage(**{key: int(left.get(key, 0)) + int(right.get(key, 0)) for key in USAGE_KEYS})


def usage_of(message: BaseMessage) -> Usage:
    """One call's usage as the server reported it (zeros when it reported none)."""
    meta = getattr(message, "usage_metadata", None) or {}
    details = meta.get("input_token_details") or {}
    return Usage(
        input_tokens=int(meta.get("input_tokens") or 0),
        output_tokens=int(meta.get("output_tokens") or 0),
        cached_tokens=int(details.get("cache_read") or 0),
        calls=1,
    )
