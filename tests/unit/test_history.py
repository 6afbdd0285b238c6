import random
from itertools import pairwise

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from graph_distill.conversation import history
from graph_distill.conversation.history import (
    MESSAGE_OVERHEAD_TOKENS,
    flipped,
    message_tokens,
    window,
)
from graph_distill.llm.resources import RunResources
from graph_distill.llm.tokens import count_tokens

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


def conversation(count: int, *, seed: int = 7, low: int = 30, high: int = 50) -> list[BaseMessage]:
    """Alternating user/assistant messages of ``low``..``high`` words, starting with the user."""
    rng = random.Random(seed)
    messages: list[BaseMessage] = []
    for index in range(count):
        text = f"m{index} " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))
        messages.append(HumanMessage(text) if index % 2 == 0 else AIMessage(text))
    return messages


def total_tokens(messages: list[BaseMessage]) -> int:
    return sum(message_tokens(message) for message in messages)


def window_starts(messages: list[BaseMessage], budget: int, step: int) -> list[int]:
    """Index of the first kept message as the conversation grows one message at a time."""
    starts = []
    for length in range(1, len(messages) + 1):
        shown = window(messages[:length], budget, step, resources=RunResources())
        start = length - len(shown)
        assert shown == messages[start:length]
        assert all(a is b for a, b in zip(shown, messages[start:length], strict=True))
        starts.append(start)
    return starts


def test_message_tokens_adds_role_overhead() -> None:
    message = HumanMessage("How do I reverse a linked list in place?")
    assert message_tokens(message) == count_tokens(message.text) + MESSAGE_OVERHEAD_TOKENS


def test_everything_within_budget_is_returned() -> None:
    messages = conversation(30)
    shown = window(messages, total_tokens(messages), step=4, resources=RunResources())
    assert shown == messages
    assert shown is not messages


def test_empty_input_gives_empty_window() -> None:
    assert window([], 100, 4, resources=RunResources()) == []


def test_over_budget_cuts_whole_steps_from_the_front() -> None:
    messages = conversation(40)
    budget = total_tokens(messages[-20:])
    shown = window(messages, budget, step=8, resources=RunResources())
    start = len(messages) - len(shown)
    assert start == 24
    assert total_tokens(shown) <= budget
    assert total_tokens(messages[start - 8 :]) > budget


def test_window_is_the_smallest_cut_that_fits() -> None:
    messages = conversation(60)
    for budget in (700, 1500, 2500, 4000):
        shown = window(messages, budget, step=6, resources=RunResources())
        start = len(messages) - len(shown)
        assert start % 6 == 0
        assert total_tokens(shown) <= budget
        if start:
            assert total_tokens(messages[start - 6 :]) > budget


@pytest.mark.parametrize(("step", "even_step"), [(0, 2), (1, 2), (2, 2), (3, 4), (5, 6), (16, 16)])
def test_step_is_rounded_up_to_even(step: int, even_step: int) -> None:
    messages = conversation(50)
    starts = set(window_starts(messages, 400, step))
    assert len(starts) > 2
    assert all(start % even_step == 0 for start in starts)
    if even_step > 2:
        assert any(start % (even_step * 2) for start in starts)


def test_growing_conversation_keeps_prefix_until_next_cut() -> None:
    step = 16
    messages = conversation(200)
    sizes = [message_tokens(message) for message in messages]
    assert max(sizes) <= 2 * min(sizes)
    starts = window_starts(messages, 2000, step)

    assert starts[0] == 0
    assert all(start % 2 == 0 for start in starts)
    assert all(isinstance(messages[start], HumanMessage) for start in starts)
    changes = [index for index, (a, b) in enumerate(pairwise(starts), 1) if a != b]
    assert len(changes) >= 5
    assert all(starts[index] - starts[index - 1] == step for index in changes)
    assert all(later - earlier >= step // 2 for earlier, later in pairwise(changes))

    for length in range(1, len(messages)):
        if starts[length] == starts[length - 1]:
            before = window(messages[:length], 2000, step, resources=RunResources())
            after = window(messages[: length + 1], 2000, step, resources=RunResources())
            assert after[: len(before)] == before


def test_equal_messages_cut_exactly_every_step() -> None:
    step = 10
    messages = [
        (HumanMessage if index % 2 == 0 else AIMessage)("same size message text here")
        for index in range(120)
    ]
    budget = 30 * message_tokens(messages[0])
    starts = window_starts(messages, budget, step)
    changes = [index for index, (a, b) in enumerate(pairwise(starts), 1) if a != b]
    assert changes
    assert all(later - earlier == step for earlier, later in pairwise(changes))


@pytest.mark.parametrize("count", [1, 2, 3, 5, 17])
def test_never_empty_even_when_nothing_fits(count: int) -> None:
    messages = conversation(count, low=400, high=500)
    shown = window(messages, 10, step=2, resources=RunResources())
    assert shown
    assert shown[-1] is messages[-1]


def test_zero_budget_keeps_at_most_one_step() -> None:
    messages = conversation(21)
    shown = window(messages, 0, step=4, resources=RunResources())
    assert 1 <= len(shown) <= 4
    assert shown == messages[-len(shown) :]


def test_flipped_swaps_user_and_assistant() -> None:
    messages = [
        HumanMessage("I need help with my resume."),
        AIMessage("Sure, what role are you applying for?"),
        HumanMessage(content=[{"type": "text", "text": "A data analyst job."}]),
    ]
    swapped = flipped(messages, RunResources())

    assert [type(message) for message in swapped] == [AIMessage, HumanMessage, AIMessage]
    assert [message.text for message in swapped] == [
        "I need help with my resume.",
        "Sure, what role are you applying for?",
        "A data analyst job.",
    ]
    assert isinstance(messages[0], HumanMessage)
    assert [type(message) for message in flipped(swapped, RunResources())] == [
        HumanMessage,
        AIMessage,
        HumanMessage,
    ]


def test_flipped_of_nothing_is_empty() -> None:
    assert flipped([], RunResources()) == []


def test_each_message_is_encoded_once_across_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[str] = []

    def counting(text: str) -> int:
        counted.append(text)
        return count_tokens(text)

    monkeypatch.setattr(history, "count_tokens", counting)
    resources = RunResources()
    messages = conversation(60, seed=random.SystemRandom().randrange(2**31))
    window(messages, budget=10**6, step=16, resources=resources)
    assert len(counted) == len(messages)
    for grown in range(1, 4):
        longer = [*messages, AIMessage(f"reply {grown}")]
        window(longer, budget=2000, step=16, resources=resources)
        messages = longer
    assert len(counted) == len(messages)
