"""Chat replies the server cut off at the token limit, trimmed back to a clean ending.

Regenerating a cut reply rarely helps (a small model with a low cap is cut again), so the
unfinished tail is dropped instead: a sentence ending mid-word is poor training data.
"""

from __future__ import annotations

import re

from langchain_core.messages import BaseMessage

# A trimmed reply shorter than this says too little; the cut text is kept instead.
MIN_TRIMMED_CHARS = 20

_FENCE = re.compile(r"[ \t]*(`{3,}|~{3,})")
# Terminal punctuation, the closing quotes, brackets or emphasis right after it, then a space
# or the end: "3.14", "example.com" and "?q=1" are no sentence ends.
_SENTENCE_END = re.compile(r"[.!?][\"'”’)\]*_]*(?=\s|$)")
# What may stand before a period that ends no sentence: a list number or letter ("2.", "b."),
# perhaps after heading or bullet markup, or a common abbreviation.
_NOT_A_SENTENCE = re.compile(
    r"(?:^[ \t]*(?:#+[ \t]+)?(?:[-*+][ \t]+)?(?:\d+|[A-Za-z])"
    r"|(?<![\w.])(?:e\.g|i\.e|vs|cf|approx|Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr|Fig))$",
    re.IGNORECASE,
)
_LIST_ITEM = re.compile(r"[ \t]*(?:[-*+•]|\d+[.)])[ \t]+\S")
# A list line ending like this leads into what was cut, so it ends nothing.
_LEADING_ON = ":,;-–—(["


def was_cut(message: BaseMessage) -> bool:
    """Whether the server stopped ``message`` at its token limit (streamed or not)."""
    return message.response_metadata.get("finish_reason") == "length"


def finished_text(message: BaseMessage) -> str:
    """The text of ``message``, trimmed by ``trim_cut_reply`` when the length limit cut it."""
    return trim_cut_reply(message.text) if was_cut(message) else message.text


def trim_cut_reply(text: str) -> str:
    """``text``, cut off mid-way, trimmed to its last complete sentence, list line or code block.

    Inside an unclosed code fence the unfinished block is dropped; when too little would be
    left the fence is closed after the last complete code line instead. When no clean ending
    leaves at least ``MIN_TRIMMED_CHARS`` characters, ``text`` comes back unchanged.
    """
    closed, open_fence = _code_fences(text)
    if open_fence is None:
        trimmed = text[: _last_ending(text, closed)].rstrip()
        return trimmed if len(trimmed) >= MIN_TRIMMED_CHARS else text
    start, marker = open_fence
    before = text[: _last_ending(text[:start], closed)].rstrip()
    if len(before) >= MIN_TRIMMED_CHARS:
        return before
    fence_line_end = text.find("\n", start)
    last_line_end = text.rfind("\n")
    if fence_line_end == -1 or last_line_end <= fence_line_end:
        return text
    return text[:last_line_end].rstrip() + "\n" + marker


def _code_fences(text: str) -> tuple[list[tuple[int, int]], tuple[int, str] | None]:
    """Spans of the closed code blocks (opening fence to end of closing fence), and the start
    and marker of a block still open at the end of ``text``."""
    closed: list[tuple[int, int]] = []
    open_fence: tuple[int, str] | None = None
    offset = 0
    for line in text.splitlines(keepends=True):
        fence = _FENCE.match(line)
        if open_fence is None:
            if fence:
                open_fence = (offset, fence.group(1))
        else:
            marker = open_fence[1]
            bare = line.strip()
            if bare.startswith(marker) and bare == bare[0] * len(bare):
                closed.append((open_fence[0], offset + len(line.rstrip("\r\n"))))
                open_fence = None
        offset += len(line)
    return closed, open_fence


def _last_ending(text: str, code: list[tuple[int, int]]) -> int:
    """Where the last complete sentence, list line or code block in ``text`` ends; 0 if none."""

    def in_code(position: int) -> bool:
        return any(start <= position < end for start, end in code)

    endings = [end for _start, end in code]
    for match in _SENTENCE_END.finditer(text):
        line_start = text.rfind("\n", 0, match.start()) + 1
        if not in_code(match.start()) and not _NOT_A_SENTENCE.search(
            text[line_start : match.start()]
        ):
            endings.append(match.end())
    offset = 0
    for line in text.splitlines(keepends=True):
        content = line.rstrip()
        complete = line.endswith("\n") and not in_code(offset)
        if complete and _LIST_ITEM.match(line) and content[-1] not in _LEADING_ON:
            endings.append(offset + len(content))
        offset += len(line)
    return max(endings, default=0)
