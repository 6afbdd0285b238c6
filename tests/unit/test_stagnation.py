import pytest

from graph_distill.conversation.stagnation import (
    REASONS,
    detect_stall,
    is_acknowledgement,
    is_goodbye,
    repeats_earlier,
    similarity,
)

THRESHOLD = 0.7
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


# ---------------------------------------------------------------- similarity


def test_identical_texts_are_fully_similar() -> None:
    assert similarity(QUESTION, QUESTION) == 1.0
    assert similarity("Why?", "why") == 1.0


def test_similarity_ignores_case_and_punctuation() -> None:
    assert similarity(QUESTION, QUESTION.upper().replace(",", "").replace("?", "!")) == 1.0


def test_unrelated_texts_are_not_similar() -> None:
    assert similarity(QUESTION, UNRELATED) == 0.0
    assert similarity(HEALTHY_USER[0], HEALTHY_USER[1]) < 0.2


def test_one_typo_stays_above_the_default_threshold() -> None:
    assert THRESHOLD <= similarity(QUESTION, QUESTION_ONE_TYPO) < 1.0


def test_small_edit_of_a_long_reply_stays_similar() -> None:
    long_reply = " ".join(HEALTHY_ASSISTANT)
    edited = long_reply.replace("takkyubin", "takyubin").replace("Popular", "Populr")
    assert similarity(long_reply, edited) >= THRESHOLD


def test_similarity_is_symmetric_and_bounded() -> None:
    pairs = [(QUESTION, QUESTION_ONE_TYPO), (QUESTION, UNRELATED), ("ok thanks", "thanks ok")]
    for a, b in pairs:
        assert similarity(a, b) == similarity(b, a)
        assert 0.0 <= similarity(a, b) <= 1.0


def test_text_without_words_is_not_similar_to_prose() -> None:
    assert similarity("", QUESTION) == 0.0
    assert similarity("?!", QUESTION) == 0.0


def test_wordless_texts_share_nothing() -> None:
    assert similarity("?", "...") == 0.0


# ---------------------------------------------------------------- repeats_earlier


def test_repeats_earlier_finds_a_near_copy_of_any_earlier_text() -> None:
    texts = [QUESTION, *HEALTHY_USER, QUESTION_ONE_TYPO]
    assert repeats_earlier(texts, THRESHOLD) is True


def test_repeats_earlier_only_looks_at_the_last_text() -> None:
    texts = [QUESTION, QUESTION_ONE_TYPO, UNRELATED]
    assert repeats_earlier(texts, THRESHOLD) is False


def test_repeats_earlier_respects_the_threshold() -> None:
    texts = [QUESTION, QUESTION_ONE_TYPO]
    assert repeats_earlier(texts, 0.95) is False
    assert repeats_earlier(texts, 0.5) is True


def test_repeats_earlier_needs_two_texts_with_words() -> None:
    assert repeats_earlier([], THRESHOLD) is False
    assert repeats_earlier([QUESTION], THRESHOLD) is False
    assert repeats_earlier(["...", "..."], THRESHOLD) is False
    assert repeats_earlier(["", ""], THRESHOLD) is False


def test_varied_texts_do_not_repeat() -> None:
    for end in range(2, len(HEALTHY_USER) + 1):
        assert repeats_earlier(HEALTHY_USER[:end], THRESHOLD) is False
        assert repeats_earlier(HEALTHY_ASSISTANT[:end], THRESHOLD) is False


# ---------------------------------------------------------------- acknowledgements and goodbyes


@pytest.mark.parametrize(
    "text",
    ["ok thanks", "got it, thank you!", "Thanks!", "OK.", "Cool, makes sense.", "yep, understood"],
)
def test_bare_acknowledgements(text: str) -> None:
    assert is_acknowledgement(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "ok but why does X fail?",
        "thanks, but I still don't get the second part",
        "Great, now how do I deploy it to production?",
        "ok " * 9,
        "",
        "...",
        QUESTION,
    ],
)
def test_not_acknowledgements(text: str) -> None:
    assert is_acknowledgement(text) is False


def test_thank_you_that_makes_sense_is_an_acknowledgement() -> None:
    assert is_acknowledgement("Thank you so much, that makes sense.") is True


def test_typographic_apostrophes_are_understood() -> None:
    assert is_acknowledgement("That’s clear, thanks") is True
    assert is_goodbye("That’s all I needed.") is True


@pytest.mark.parametrize(
    "text",
    [
        "Bye!",
        "Thanks, that's all for today. Goodbye!",
        "Great, talk to you later",
        "see ya",
        "Have a great day!",
        "OK, signing off now.",
    ],
)
def test_goodbyes(text: str) -> None:
    assert is_goodbye(text) is True


@pytest.mark.parametrize(
    "text",
    [
        "Can you show me how bytes work?",
        "Could you see your way to a shorter example?",
        "What should I do next with the migration?",
        "",
    ],
)
def test_not_goodbyes(text: str) -> None:
    assert is_goodbye(text) is False


@pytest.mark.parametrize(
    "text",
    [
        "How do I take care of null values in this column?",
        "If that's all it takes, why does the build still fail?",
    ],
)
def test_goodbye_words_inside_a_question_are_not_a_goodbye(text: str) -> None:
    assert is_goodbye(text) is False


# ---------------------------------------------------------------- detect_stall


def test_healthy_conversation_has_no_stall() -> None:
    for rounds in range(1, len(HEALTHY_USER) + 1):
        stall = detect_stall(HEALTHY_USER[:rounds], HEALTHY_ASSISTANT[:rounds], THRESHOLD)
        assert stall is None


def test_empty_conversation_has_no_stall() -> None:
    assert detect_stall([], [], THRESHOLD) is None


def test_user_repeat() -> None:
    users = [QUESTION, *HEALTHY_USER[:3], QUESTION_ONE_TYPO]
    assistants = HEALTHY_ASSISTANT[:5]
    assert detect_stall(users, assistants, THRESHOLD) == "user_repeat"
    assert detect_stall(users, assistants, 0.95) is None


def test_assistant_repeat() -> None:
    users = HEALTHY_USER[:4]
    assistants = [*HEALTHY_ASSISTANT[:3], HEALTHY_ASSISTANT[1]]
    assert detect_stall(users, assistants, THRESHOLD) == "assistant_repeat"


def test_two_rounds_of_acknowledgements() -> None:
    users = [*HEALTHY_USER[:3], "ok thanks", "got it, cool"]
    assert detect_stall(users, HEALTHY_ASSISTANT[:5], THRESHOLD) == "acknowledgements"


def test_one_acknowledgement_is_not_a_stall() -> None:
    users = [*HEALTHY_USER[:3], "ok thanks"]
    assert detect_stall(users, HEALTHY_ASSISTANT[:4], THRESHOLD) is None
    users = [*HEALTHY_USER[:3], "ok thanks", HEALTHY_USER[4]]
    assert detect_stall(users, HEALTHY_ASSISTANT[:5], THRESHOLD) is None


def test_early_goodbye() -> None:
    users = [*HEALTHY_USER[:3], "This was super helpful for my planning, bye!"]
    assert detect_stall(users, HEALTHY_ASSISTANT[:4], THRESHOLD) == "early_goodbye"


def test_goodbye_earlier_in_the_conversation_is_not_a_stall_now() -> None:
    users = ["Hi, quick one before I say bye: what is a JR Pass?", *HEALTHY_USER[1:4]]
    assert detect_stall(users, HEALTHY_ASSISTANT[:4], THRESHOLD) is None


def test_every_reason_has_a_description() -> None:
    assert set(REASONS) == {"user_repeat", "assistant_repeat", "acknowledgements", "early_goodbye"}
    assert all(description.strip() for description in REASONS.values())
