import pytest

from graph_distill.conversation.roles import answers_itself, explains_like_expert, role_break
from graph_distill.conversation.stagnation import fingerprint


@pytest.mark.parametrize(
    "text",
    [
        "What is overfitting? Overfitting is when a model memorises the training data.",
        "Should I normalise the inputs? Yes, because the scale affects gradient steps.",
        "How do I pick k? Here's how: plot the error for several values and take the elbow.",
        "Why is it slow? You should use a dict lookup, and you can also cache the cleanup.",
    ],
)
def test_a_user_answering_its_own_question_at_any_length(text: str) -> None:
    assert answers_itself(text)
    assert role_break(text, None) == "answers its own question"


@pytest.mark.parametrize(
    "text",
    [
        "Why does my loop hang? The loop is inside a thread.",
        "What is a proxy server? What is a CDN? What's the difference?",
        "How do I fix this? It has been broken since yesterday's deploy.",
        "Can you show me an example? I learn better from code.",
        "hmm so how do i spot overfitting early?",
    ],
)
def test_a_question_with_context_or_more_questions_is_in_role(text: str) -> None:
    assert not answers_itself(text)
    assert role_break(text, None) is None


def test_a_user_explaining_like_an_expert() -> None:
    lecture = (
        "Caching matters. First, you should profile the script. Second, make sure to index "
        "the email column. Finally, keep in mind that joins beat nested loops."
    )
    assert explains_like_expert(lecture)
    assert role_break(lecture, None) == "explains like an expert"
    assert not explains_like_expert("I tried the index you suggested and it still takes an hour")


def test_an_echo_is_found_from_the_reply_text_or_its_print() -> None:
    reply = (
        "Index the email column, then join the two tables on it instead of looping over "
        "every pair of rows, and the match takes seconds."
    )
    echo = "index the email column, then join the two tables on it instead of looping"
    shingles = fingerprint(reply)["shingles"]
    assert role_break(echo, reply) == role_break(echo, reply, shingles) == "echoes the assistant"
    own = "ok I added the index, but the join still runs for an hour on the staging box"
    assert role_break(own, reply) is role_break(own, reply, shingles) is None
