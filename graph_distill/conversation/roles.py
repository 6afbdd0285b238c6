"""Is a simulated user message in role? Cleaning it and spotting role breaks."""

from __future__ import annotations

import re
from collections.abc import Collection

from graph_distill.conversation.stagnation import shingle_set

_AI_VOICE = re.compile(
    r"^\s*(as an ai\b|as a (large )?language model|i(?:'m| am) (an ai\b|a language model|"
    r"an? (ai )?assistant\b|your assistant))|\b(assistant|ai)\s*:",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^\s*(user|me|human)\s*:\s*", re.IGNORECASE)
# How an answer starts, right after the question it answers.
_ANSWER_OPENER = re.compile(
    r"^\s*(yes|no|sure|certainly|of course|absolutely|the answer|it'?s because|this is because|"
    r"that'?s because|because|here'?s|here is|here are|great question|good question|in short|"
    r"simply put|basically|well,|to answer)\b",
    re.IGNORECASE,
)
# How an expert explains (a user asks, reports or pushes back instead).
_EXPERT = re.compile(
    r"\b(you (should|need to|will need|'ll need|might want|may want|can use|can try|can also)|"
    r"i(?:'d| would)? (recommend|suggest)|here are|here'?s how|let me explain|for example|"
    r"for instance|keep in mind|make sure (to|you)|it'?s (important|essential|crucial) to|"
    r"in (summary|conclusion)|the key is|refers to|is defined as|is a (type|kind|form) of|"
    r"first(ly)?,|second(ly)?,|finally,|additionally,|furthermore,)",
    re.IGNORECASE,
)
# "What is X? X is ...": a sentence defining what the question asked about.
_DEFINITION = re.compile(
    r"^\s*(?:the |an? )?([\w'-]+(?: [\w'-]+){0,3}?) "
    r"(?:is|are|means|refers to|works by|happens when)\b[^?]*?(?:[.!\n]|$)",
    re.IGNORECASE,
)
_WHAT_IS = re.compile(
    r"\b(?:what|who) (?:is|are|was|were)\b|\bwhat does .+ mean\b|\bhow does .+ work\b",
    re.IGNORECASE,
)
_LIST_LINE = re.compile(r"^\s*(\d+[.)]|[-*\u2022])\s+\S", re.MULTILINE)
MAX_USER_CHARS = 1500
# A user message this much made of the last reply is a copy, not a message (partial echoes
# are left to stagnation detection, which escalates when they go on).
ECHO_CONTAINMENT = 0.8
EXPERT_MARKERS = 3


def clean_user_text(text: str) -> str:
    text = _LABEL.sub("", text.strip()).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def answers_itself(text: str) -> bool:
    """A question followed by its own answer: an answer opener or an explanation after it."""
    question_end = text.find("?")
    if question_end < 0:
        return False
    question, after = text[: question_end + 1].lower(), text[question_end + 1 :]
    definition = _DEFINITION.match(after) if _WHAT_IS.search(question) else None
    defines_subject = bool(definition) and all(
        word in question for word in definition.group(1).lower().split()
    )
    return defines_subject or bool(_ANSWER_OPENER.match(after)) or len(_EXPERT.findall(after)) >= 2


def explains_like_expert(text: str) -> bool:
    markers = len(_EXPERT.findall(text)) + len(_LIST_LINE.findall(text))
    return markers >= EXPERT_MARKERS


def role_break(
    text: str, last_reply: str | None, reply_shingles: Collection[int] | None = None
) -> str | None:
    """Why a simulated user message is out of role, or None when it is fine.
    ``reply_shingles``: the last reply's hashed word triples, when its print has them."""
    if not text:
        return "empty"
    if _AI_VOICE.search(text):
        return "speaks as the AI"
    if answers_itself(text):
        return "answers its own question"
    if explains_like_expert(text) or len(text) > MAX_USER_CHARS:
        return "explains like an expert"
    if last_reply and _echoes(text, reply_shingles or shingle_set(last_reply)):
        return "echoes the assistant"
    return None


def _echoes(text: str, reply_shingles: Collection[int]) -> bool:
    """Whether ``text`` is mostly made of the last reply's word triples."""
    grams = shingle_set(text)
    return bool(grams) and len(grams.intersection(reply_shingles)) / len(grams) >= ECHO_CONTAINMENT
