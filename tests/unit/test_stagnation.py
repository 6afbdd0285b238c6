from collections.abc import Sequence

import pytest

from graph_distill.context import ConversationContext
from graph_distill.conversation.stagnation import (
    MEMORY_ROUNDS,
    REASONS,
    RoundPrint,
    drift_score,
    fingerprint,
    is_acknowledgement,
    is_goodbye,
    keep_recent,
    near_copy,
    observe,
    self_repeat,
    similarity,
    stall_reason,
    stems,
)

CTX = ConversationContext()
QUESTION = (
    "Could you explain how Python decorators work when they take arguments, and why the extra "
    "layer of nesting is needed for the wrapper function to receive them?"
)
QUESTION_ONE_TYPO = QUESTION.replace("arguments", "argumnets")
UNRELATED = (
    "My sourdough starter smells like nail polish remover after three days on the counter "
    "in a cold kitchen."
)
HEALTHY_USER = [
    "I'm planning a two-week trip to Japan in April. Where should I start with the itinerary?",
    "Is the JR Pass still worth it after the price increase if I mostly stay in Tokyo and Kyoto?",
    "How crowded do the cherry blossom spots get, and are early mornings really quieter?",
    "What's a realistic daily budget for food if I want to try some nicer restaurants?",
    "Could you suggest a day trip from Kyoto that isn't Nara?",
    "Thanks, that helps. How do I handle luggage when moving between cities by train?",
]
HEALTHY_ASSISTANT = [
    "Start with your entry and exit cities, then decide how many bases you want to stay in.",
    "Since the 2023 price rise, the pass only pays off with long trips such as Tokyo to Hiroshima.",
    "Popular parks fill up by mid-morning; arriving before seven usually means thin crowds.",
    "Plan for roughly 5,000 yen a day with one sit-down dinner; kaiseki meals cost far more.",
    "Consider Amanohashidate or Lake Biwa, both reachable in under two hours by rail.",
    "Use the takkyubin forwarding service to send bags ahead to your next hotel for a small fee.",
]
TOPIC = sorted(stems("Planning a trip to Japan: itinerary, rail pass, budget, Tokyo and Kyoto"))
LOOP_OPENING = "You're so right, I'll just make sure to share more examples of this theme"


def replay(users: Sequence[str], assistants: Sequence[str]) -> list[RoundPrint]:
    prints: list[RoundPrint] = []
    for number, (user, assistant) in enumerate(zip(users, assistants, strict=True), 1):
        prints = keep_recent(prints, [observe(number, user, assistant, prints, CTX)])
    return prints


def reason(users: Sequence[str], assistants: Sequence[str], since: int | None = None) -> str | None:
    prints = replay(users, assistants)
    return stall_reason(prints, TOPIC, len(users) if since is None else since, CTX)


# ---------------------------------------------------------------- similarity and copies


def test_similarity_ignores_case_and_punctuation() -> None:
    assert similarity(QUESTION, QUESTION.upper().replace(",", "")) == 1.0
    assert similarity(QUESTION, UNRELATED) == 0.0


def test_a_near_copy_by_containment() -> None:
    assert near_copy(fingerprint(QUESTION_ONE_TYPO), fingerprint(QUESTION), CTX)
    assert not near_copy(fingerprint(UNRELATED), fingerprint(QUESTION), CTX)


def test_a_short_message_inside_a_long_one_is_a_copy_but_not_the_other_way() -> None:
    long = f"{UNRELATED} {QUESTION} {HEALTHY_ASSISTANT[0]}"
    assert near_copy(fingerprint(QUESTION), fingerprint(long), CTX)
    assert not near_copy(fingerprint(long), fingerprint(QUESTION), CTX)


def test_a_long_shared_opening_is_a_copy_whatever_the_tail() -> None:
    a = f"{LOOP_OPENING} of friendship, because generosity matters to everyone I know."
    b = f"{LOOP_OPENING} and kindness, since the people around me deserve my time and care."
    assert similarity(a, b) < 0.5  # whole-message Jaccard misses it
    assert near_copy(fingerprint(a), fingerprint(b), CTX)
    assert not near_copy(fingerprint(a), fingerprint(HEALTHY_USER[0]), CTX)
    short_opening = "Can you explain how the rail pass works for a trip to Osaka?"
    assert not near_copy(fingerprint(short_opening), fingerprint(HEALTHY_USER[1]), CTX)


def test_wordless_messages_copy_nothing() -> None:
    assert not near_copy(fingerprint("?!"), fingerprint("?!"), CTX)


# ---------------------------------------------------------------- one message


def test_a_message_repeating_its_sentences() -> None:
    looping = "I love this idea. " * 4 + "It makes me happy. I love this idea so much."
    assert self_repeat(looping) >= CTX.self_repeat_threshold
    assert self_repeat(" ".join(HEALTHY_ASSISTANT)) == 0.0


@pytest.mark.parametrize(
    "text",
    ["ok thanks", "got it, thank you!", "Thanks!", "OK.", "Cool, makes sense.", "yep, understood"],
)
def test_bare_acknowledgements(text: str) -> None:
    assert is_acknowledgement(text) is True


@pytest.mark.parametrize(
    "text", ["ok but why does X fail?", "Great, now how do I deploy it?", "ok " * 9, "", "..."]
)
def test_not_acknowledgements(text: str) -> None:
    assert is_acknowledgement(text) is False


@pytest.mark.parametrize(
    "text", ["Bye!", "Thanks, that's all for today. Goodbye!", "see ya", "Have a great day!"]
)
def test_goodbyes(text: str) -> None:
    assert is_goodbye(text) is True


@pytest.mark.parametrize(
    "text",
    ["How do I take care of null values in this column?", "Could you see your way to a demo?", ""],
)
def test_not_goodbyes(text: str) -> None:
    assert is_goodbye(text) is False


def test_typographic_apostrophes_are_understood() -> None:
    assert is_acknowledgement("That’s clear, thanks") is True
    assert is_goodbye("That’s all I needed.") is True


# ---------------------------------------------------------------- stall_reason


def test_a_healthy_conversation_has_no_stall() -> None:
    for rounds in range(1, len(HEALTHY_USER) + 1):
        assert reason(HEALTHY_USER[:rounds], HEALTHY_ASSISTANT[:rounds]) is None


def test_nothing_to_judge_before_the_first_round() -> None:
    assert stall_reason([], TOPIC, 0, CTX) is None


def test_one_repeat_is_pressing_a_point_two_in_a_row_are_a_loop() -> None:
    users = [QUESTION, *HEALTHY_USER[:3], QUESTION]
    assert reason(users, HEALTHY_ASSISTANT[:5]) is None
    users = [*users, QUESTION]
    assert reason(users, HEALTHY_ASSISTANT[:6]) == "user_repeat"
    assistants = [*HEALTHY_ASSISTANT[:4], HEALTHY_ASSISTANT[0], HEALTHY_ASSISTANT[0]]
    assert reason(HEALTHY_USER, assistants) == "assistant_repeat"


def test_one_side_reusing_its_phrasing_is_no_loop_both_sides_are() -> None:
    template = "Give 3 simpler versions and the opposite meaning of this sentence: {}"
    users = [template.format(a) for a in HEALTHY_ASSISTANT]
    assert reason(users, HEALTHY_USER) is None
    replies = [f"Here are simpler versions of the sentence you sent: {u}" for u in HEALTHY_USER]
    assert reason(users, replies) is None
    looped = [f"{LOOP_OPENING} {n}" for n in ("of Kyoto", "of Tokyo", "of Osaka", "of Nara")]
    answers = [f"Sure, {LOOP_OPENING} {n}" for n in ("in Kyoto", "in Tokyo", "in Osaka", "too")]
    assert reason([*HEALTHY_USER[:2], *looped], [*HEALTHY_ASSISTANT[:2], *answers]) == (
        "assistant_repeat"
    )


def test_the_user_parroting_the_assistant_is_an_echo() -> None:
    users = [HEALTHY_USER[0], HEALTHY_USER[1], HEALTHY_ASSISTANT[1], HEALTHY_ASSISTANT[2]]
    assert reason(users, HEALTHY_ASSISTANT[:4]) == "echo"


def test_a_praise_spiral_without_new_content() -> None:
    users = [HEALTHY_USER[0], "Thank you so much, you're so right about Japan and the trip!"] * 2
    assistants = [
        HEALTHY_ASSISTANT[0],
        "Thank you! I'm so glad you love the trip to Japan, it is wonderful.",
    ] * 2
    users[2], assistants[2] = HEALTHY_USER[1], HEALTHY_ASSISTANT[1]
    spiral_users = [*users, "You're so right, the trip to Japan is amazing, thank you."]
    spiral_assistants = [*assistants, "Thank you, I'm so happy the Japan trip is wonderful!"]
    assert reason(spiral_users, spiral_assistants) == "praise_spiral"


def test_thanks_with_new_content_is_no_spiral() -> None:
    users = [f"Thanks, that's amazing! {q}" for q in HEALTHY_USER]
    assistants = [f"You're welcome, glad it helps. {a}" for a in HEALTHY_ASSISTANT]
    assert reason(users, assistants) is None


def test_drift_away_from_the_scenario() -> None:
    off = [
        "Friendship means generosity and kindness to everyone around us.",
        "Generosity and kindness make friendships stronger every single day.",
        "Being kind to friends brings warmth and gratitude into life.",
        "Kindness and gratitude are the heart of every lasting friendship.",
        "Sharing meals with neighbours is how communities stay close.",
        "Honesty between companions matters more than anything money buys.",
    ]
    assert reason(HEALTHY_USER, HEALTHY_ASSISTANT) is None
    replies = [
        "Warm friendships grow when people share their time generously.",
        "Gratitude turns ordinary days into something meaningful for friends.",
        "Small gestures of care strengthen bonds between neighbours.",
        "Lasting bonds come from patience, honesty and shared laughter.",
        "Communities thrive when everyone feels welcome at the table.",
        "Trust grows slowly, through many small promises that are kept.",
    ]
    assert reason(off, replies) == "drift"
    assert drift_score(replay(off, replies), TOPIC) < CTX.drift_threshold
    assert drift_score(replay(HEALTHY_USER, HEALTHY_ASSISTANT), TOPIC) > CTX.drift_threshold


def test_only_rounds_after_the_last_switch_count() -> None:
    users = [HEALTHY_USER[0], QUESTION, QUESTION, QUESTION]
    assert reason(users, HEALTHY_ASSISTANT[:4]) == "user_repeat"
    assert reason(users, HEALTHY_ASSISTANT[:4], since=1) is None
    assert reason(users, HEALTHY_ASSISTANT[:4], since=2) == "user_repeat"


def test_two_rounds_of_acknowledgements_and_an_early_goodbye() -> None:
    acks = [*HEALTHY_USER[:3], "ok thanks", "got it, cool"]
    assert reason(acks, HEALTHY_ASSISTANT[:5]) == "acknowledgements"
    assert reason(acks[:4], HEALTHY_ASSISTANT[:4]) is None
    bye = [*HEALTHY_USER[:3], "This was super helpful for my planning, bye!"]
    assert reason(bye, HEALTHY_ASSISTANT[:4]) == "early_goodbye"


def test_memory_is_bounded() -> None:
    prints = replay(HEALTHY_USER * 5, HEALTHY_ASSISTANT * 5)
    assert len(prints) == MEMORY_ROUNDS
    assert prints[-1]["round"] == 30


def test_every_reason_has_a_description() -> None:
    assert all(description.strip() for description in REASONS.values())
