"""Is a simulated user message in role? Cleaning it and spotting role breaks."""

from __future__ import annotations

import re

from graph_distill.conversation.stagnation import similarity

_AI_VOICE = re.compile(
    r"^\s*(as an ai\b|as a (large )?language model|i(?:'m| am) (an ai\b|a language model|"
    r"an? (ai )?assistant\b|your assistant))|\b(assistant|ai)\s*:",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^\s*(user|me|human)\s*:\s*", re.IGNORECASE)
MAX_USER_CHARS = 1500


def clean_user_text(text: str) -> str:
    text = _LABEL.sub("", text.strip()).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def role_break(text: str, last_reply: str | None) -> str | None:
    """Why a simulated user message is out of role, or None when it is fine."""
    if not text:
        return "empty"
    if _AI_VOICE.search(text):
        return "speaks as the AI"
    if len(text) > MAX_USER_CHARS:
        return "answers itself at length"
    if last_reply and similarity(text, last_reply) >= 0.8:
        return "echoes the assistant"
    return None
