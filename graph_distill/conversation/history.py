"""What each model sees of a long conversation: a token-bounded, cache-friendly window."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from graph_distill.llm.resources import RunResources
from graph_distill.llm.tokens import count_tokens

# Role framing the chat template adds around each message.
MESSAGE_OVERHEAD_TOKENS = 4


def message_tokens(message: BaseMessage) -> int:
    """Tokens of ``message`` with its role framing."""
    return count_tokens(_text(message)) + MESSAGE_OVERHEAD_TOKENS


def window(
    messages: Sequence[BaseMessage], budget: int, step: int, resources: RunResources
) -> list[BaseMessage]:
    """The newest messages within ``budget`` tokens, cut only at multiples of ``step``; each
    message is counted once while it lives (kept by the run's ``resources``), not per call.

    Cutting in whole steps keeps the start of the prompt identical from call to call
    until the next cut, so a prefix-caching server bills most prompt tokens as cached.
    ``step`` is rounded up to an even number so the window starts on the same role.
    """
    step = max(2, step + step % 2)
    counts = [resources.derived("tokens", m, message_tokens) for m in messages]
    total, start = sum(counts), 0
    while total > budget and len(messages) - start > step:
        total -= sum(counts[start : start + step])
        start += step
    return list(messages[start:])


def flipped(messages: Sequence[BaseMessage], resources: RunResources) -> list[BaseMessage]:
    """The conversation from the simulated user's side: their own lines become the AI's.

    Each message is flipped once per run (kept by the run's ``resources``), not on every
    call."""
    return [resources.derived("flipped", m, _flip) for m in messages]


def _flip(message: BaseMessage) -> BaseMessage:
    if isinstance(message, HumanMessage):
        return AIMessage(content=_text(message))
    return HumanMessage(content=_text(message))


def _text(message: BaseMessage) -> str:
    # The content itself when it is a string (no copy; ``text`` builds a new string each time).
    content = message.content
    return content if isinstance(content, str) else message.text
