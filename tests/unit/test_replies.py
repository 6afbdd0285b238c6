"""Trimming replies the server cut at the token limit back to a clean ending."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage

from graph_distill.llm.replies import MIN_TRIMMED_CHARS, finished_text, trim_cut_reply, was_cut


@pytest.mark.parametrize(
    ("cut", "trimmed"),
    [
        (
            "Gradient descent updates weights step by step. It uses the slope of the loss to wh",
            "Gradient descent updates weights step by step.",
        ),
        ("Is that really the case? I think it depends on how yo", "Is that really the case?"),
        ('He told me "stop right there." Then the dog ran awa', 'He told me "stop right there."'),
        ("Try it (it is cheap and fast.) Then tell me whether the resu", None),
        ("Pi is about 3.14, e.g. for circles. The radius of the whe", None),
        ("**Step one is done.** Next we look at the cach", "**Step one is done.**"),
    ],
)
def test_trims_to_the_last_sentence_end(cut: str, trimmed: str | None) -> None:
    expected = trimmed if trimmed is not None else cut[: cut.rindex(".") + 2].rstrip()
    assert trim_cut_reply(cut) == expected


def test_number_abbreviation_and_list_marker_periods_end_no_sentence() -> None:
    cut = "You can use tools, e.g. numpy 1.26 or pandas.DataFrame, vs. the old one or Dr. Smi"
    assert trim_cut_reply(cut) == cut
    steps = "Do these things in order now.\n1. Install Pyth"
    assert trim_cut_reply(steps) == "Do these things in order now."
    heading = "Setting it up takes a minute.\n## 2. Running it\nFirst start the serv"
    assert trim_cut_reply(heading) == "Setting it up takes a minute."


def test_complete_list_lines_are_endings_even_without_a_full_stop() -> None:
    cut = "Here are the steps:\n1. Install Python\n2. Create a venv\n3. Run the scr"
    assert trim_cut_reply(cut) == "Here are the steps:\n1. Install Python\n2. Create a venv"
    bullets = "Options that work well.\n- **Adam** for most nets\n- SGD with momentum\n- RMSp"
    assert trim_cut_reply(bullets) == bullets[: bullets.rindex("\n")]


def test_list_line_leading_into_the_cut_is_no_ending() -> None:
    cut = "That is all there is to it.\n- Install these:\n  - num"
    assert trim_cut_reply(cut) == "That is all there is to it."


def test_unfinished_code_block_is_dropped() -> None:
    cut = (
        "First load the data. Then filter the rows.\n\nHere is the code:\n"
        "```python\nimport pandas as pd\ndf = pd.read_csv("
    )
    assert trim_cut_reply(cut) == "First load the data. Then filter the rows."


def test_unfinished_code_block_is_closed_when_too_little_precedes_it() -> None:
    cut = (
        'Sure! Here is the code:\n```python\nimport pandas as pd\ndf = pd.read_csv("x")\n'
        "print(df.he"
    )
    assert trim_cut_reply(cut) == (
        'Sure! Here is the code:\n```python\nimport pandas as pd\ndf = pd.read_csv("x")\n```'
    )
    tilde = "Run this:\n~~~~\nmake all\nmake inst"
    assert trim_cut_reply(tilde) == "Run this:\n~~~~\nmake all\n~~~~"


def test_code_block_without_a_complete_line_is_kept_as_is() -> None:
    cut = "Ok, here.\n```python\nimport pand"
    assert trim_cut_reply(cut) == cut


def test_closed_code_block_is_an_ending_and_its_inside_is_not() -> None:
    cut = "Intro text is here.\n```py\n# Load data.\nx = 1\n```\nThen we cut her"
    assert trim_cut_reply(cut) == "Intro text is here.\n```py\n# Load data.\nx = 1\n```"


def test_complete_text_is_unchanged() -> None:
    text = "Gradient descent updates weights. That is the whole idea!"
    assert trim_cut_reply(text) == text


@pytest.mark.parametrize(
    "cut",
    [
        "just some words with no ending at all and then mor",
        "I said no. Then I went into the kitch",  # "I said no." is under the minimum
        "Here is the code:\n```python\nimport pand",
        "",
    ],
)
def test_too_little_or_no_ending_keeps_the_text(cut: str) -> None:
    assert len("I said no.") < MIN_TRIMMED_CHARS
    assert trim_cut_reply(cut) == cut


def test_only_replies_cut_by_the_length_limit_are_trimmed() -> None:
    text = "Gradient descent updates weights step by step. It uses the slo"
    cut = AIMessage(text, response_metadata={"finish_reason": "length"})
    done = AIMessage(text, response_metadata={"finish_reason": "stop"})
    assert was_cut(cut) and not was_cut(done) and not was_cut(AIMessage(text))
    assert finished_text(cut) == "Gradient descent updates weights step by step."
    assert finished_text(done) == text
