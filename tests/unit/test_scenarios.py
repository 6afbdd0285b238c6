import json
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from graph_distill.conversation.scenarios import (
    RECORD_FIELDS,
    Scenario,
    ScenarioError,
    builtin_scenarios,
    derive_key,
    load_scenarios_file,
    pick_scenario,
    select_scenarios,
)

# The scenario table of the original design, verbatim.
ORIGINAL_TABLE = [
    ("Machine Learning Basics",
     "User asks about machine learning basics, AI explains and answers questions"),
    ("Python Programming Basics",
     "User learns Python programming, AI provides guidance and answers"),
    ("Science Q&A",
     "User asks about scientific knowledge, AI provides popular science explanations"),
    ("Daily Problem Solving", "User encounters daily problems, AI provides solutions"),
    ("Technical Concepts", "User asks about technical concepts, AI provides explanations"),
    ("Learning Methods", "User asks about learning methods, AI provides guidance"),
    ("Tool Usage Tips", "User asks about tool usage, AI provides tips"),
    ("Error Debugging", "User encounters error issues, AI helps debug"),
    ("Code Optimization", "User asks about code optimization, AI provides suggestions"),
    ("Project Development", "User develops projects, AI provides guidance"),
]  # fmt: skip
BUILTIN_KEYS = [
    "MachineLearning",
    "PythonProgramming",
    "ScienceQA",
    "DailyProblems",
    "TechnicalConcepts",
    "LearningMethods",
    "ToolUsage",
    "ErrorDebugging",
    "CodeOptimization",
    "ProjectDevelopment",
]
SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def record(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "name": "Cooking",
        "description": "User cooks, AI helps",
        "user_prompt": "My risotto is always gluey, what am I doing wrong?",
        "ai_role": "You are a chef.",
        "user_followups": ["How long do I stir?", "Which rice?"],
    }
    base.update(overrides)
    return {field: value for field, value in base.items() if value is not ...}


def write_json(tmp_path: Path, data: object, name: str = "my.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_text(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ScenarioError) as caught:
        load_scenarios_file(path)
    return str(caught.value)


# --- built-in scenarios ---------------------------------------------------------------------


def test_builtins_are_the_original_ten_in_order() -> None:
    scenarios = builtin_scenarios()
    assert [(s.name, s.description) for s in scenarios] == ORIGINAL_TABLE
    assert [s.key for s in scenarios] == BUILTIN_KEYS


@pytest.mark.parametrize("scenario", builtin_scenarios(), ids=lambda s: s.key)
def test_builtin_is_complete(scenario: Scenario) -> None:
    assert SAFE_STEM.fullmatch(scenario.key)
    for text in (scenario.name, scenario.description, scenario.user_prompt, scenario.ai_role):
        assert text.strip() == text and text
    assert len(scenario.user_followups) >= 8
    assert all(followup.strip() for followup in scenario.user_followups)
    assert len(set(scenario.user_followups)) == len(scenario.user_followups)
    assert scenario.user_prompt not in scenario.user_followups
    assert "#" not in scenario.ai_role


def test_builtin_keys_are_unique_ignoring_case() -> None:
    keys = [s.key.casefold() for s in builtin_scenarios()]
    assert len(set(keys)) == len(keys)


def test_machine_learning_keeps_the_original_prompt_and_followups() -> None:
    ml = builtin_scenarios()[0]
    assert ml.user_prompt == (
        "I want to learn machine learning but don't know where to start. "
        "Can you give me some suggestions?"
    )
    assert ml.user_followups[:3] == (
        "What's the difference between supervised and unsupervised learning",
        "What are overfitting and underfitting",
        "How to choose the right algorithm",
    )
    assert ml.ai_role.startswith("You are a machine learning expert")


def test_builtins_are_cached() -> None:
    assert builtin_scenarios() is builtin_scenarios()


def test_import_reads_no_files() -> None:
    probe = (
        "import importlib.resources as r\n"
        "real = r.files\n"
        "def guarded(anchor, *a, **k):\n"
        "    if str(getattr(anchor, '__name__', anchor)).startswith('graph_distill'):\n"
        "        raise AssertionError('I/O at import')\n"
        "    return real(anchor, *a, **k)\n"
        "r.files = guarded\n"
        "import graph_distill, graph_distill.cli.main, graph_distill.conversation.scenarios\n"
    )
    subprocess.run([sys.executable, "-c", probe], check=True)


# --- records ----------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", builtin_scenarios(), ids=lambda s: s.key)
def test_record_round_trip(scenario: Scenario) -> None:
    data = scenario.to_record()
    assert list(data) == list(RECORD_FIELDS)
    assert isinstance(data["user_followups"], list)
    assert json.loads(json.dumps(data)) == data
    assert Scenario.from_record({**data, "key": scenario.key}) == scenario
    assert Scenario.from_record(data).key == derive_key(scenario.name)


def test_from_record_derives_key_and_strips_text() -> None:
    scenario = Scenario.from_record(
        record(name="  Science Q&A ", ai_role="You are a chef.\n", user_followups=("  a  ", "b"))
    )
    assert scenario.key == "ScienceQA"
    assert scenario.name == "Science Q&A"
    assert scenario.ai_role == "You are a chef."
    assert scenario.user_followups == ("a", "b")


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("Science Q&A", "ScienceQA"),
        ("machine learning basics", "MachineLearningBasics"),
        ("  C++ tips!", "CTips"),
        ("3D printing", "3DPrinting"),
        ("Café au lait", "CafAuLait"),
        ("word " * 40, "Word" * 16),
    ],
)
def test_derive_key(name: str, key: str) -> None:
    assert derive_key(name) == key
    assert SAFE_STEM.fullmatch(key)


def test_from_record_reports_every_problem_with_where() -> None:
    bad = record(name="", ai_role=3, user_followups="ask more", colour="red")
    with pytest.raises(ScenarioError) as caught:
        Scenario.from_record(bad, where="x.json: scenario 2")
    assert caught.value.problems == (
        "x.json: scenario 2: name is empty",
        "x.json: scenario 2: ai_role must be text, not a number",
        "x.json: scenario 2: user_followups must be a list of non-empty strings, not text",
        'x.json: scenario 2: unknown field "colour" (allowed: key, name, description, '
        "user_prompt, ai_role, user_followups)",
    )
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_from_record_without_where_starts_with_the_field() -> None:
    with pytest.raises(ScenarioError, match=r"^user_prompt is missing$"):
        Scenario.from_record(record(user_prompt=...))


# --- loading files ----------------------------------------------------------------------------


def test_load_yaml_list(tmp_path: Path) -> None:
    path = write_text(
        tmp_path,
        "mine.yaml",
        "- name: Cooking\n"
        "  description: User cooks, AI helps\n"
        "  user_prompt: My risotto is gluey.\n"
        "  ai_role: |\n"
        "    You are a chef.\n"
        "  user_followups:\n"
        "    - Which rice?\n"
        "- key: Garden-2\n"
        "  name: Garden\n"
        "  description: d\n"
        "  user_prompt: p\n"
        "  ai_role: r\n"
        "  user_followups: [f]\n",
    )
    cooking, garden = load_scenarios_file(path)
    assert cooking == Scenario(
        key="Cooking",
        name="Cooking",
        description="User cooks, AI helps",
        user_prompt="My risotto is gluey.",
        ai_role="You are a chef.",
        user_followups=("Which rice?",),
    )
    assert garden.key == "Garden-2"


def test_load_json_object_with_scenarios(tmp_path: Path) -> None:
    path = write_json(tmp_path, {"scenarios": [record(), record(name="Baking")]})
    assert [s.key for s in load_scenarios_file(str(path))] == ["Cooking", "Baking"]


@pytest.mark.parametrize("name", ["mine.yml", "mine.txt", "mine"])
def test_load_other_suffixes(tmp_path: Path, name: str) -> None:
    yaml_path = write_text(tmp_path, name, "scenarios:\n  - " + json.dumps(record()) + "\n")
    assert load_scenarios_file(yaml_path)[0].name == "Cooking"


def test_load_unknown_suffix_json(tmp_path: Path) -> None:
    path = write_json(tmp_path, [record()], name="mine.conf")
    assert load_scenarios_file(path)[0].key == "Cooking"


def test_load_accepts_utf8_bom(tmp_path: Path) -> None:
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([record(name="Crème")]).encode())
    assert load_scenarios_file(path)[0].name == "Crème"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert load_error(path) == f"{path}: file not found"


def test_directory(tmp_path: Path) -> None:
    assert load_error(tmp_path) == f"{tmp_path}: is a directory, not a scenarios file"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_json(tmp_path, [record()])

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert load_error(path) == f"{path}: cannot read the file (Permission denied)"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"- name: ok\n- name: caf\xe9\n")
    assert load_error(path) == (
        f"{path}: not UTF-8 text (byte 0xe9 on line 2); save the file as UTF-8"
    )


@pytest.mark.parametrize("text", ["", "  \n\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    path = write_text(tmp_path, "empty.json", text)
    assert load_error(path) == f"{path}: the file is empty; expected a list of scenarios"


def test_json_syntax_error_has_line(tmp_path: Path) -> None:
    path = write_text(tmp_path, "bad.json", '[\n  {"name": "x"\n  "description": "y"}\n]')
    assert load_error(path) == (
        f"{path}: invalid JSON on line 3, column 3: Expecting ',' delimiter"
    )


def test_yaml_syntax_error_has_line(tmp_path: Path) -> None:
    path = write_text(tmp_path, "bad.yaml", "- name: a\n  description: b: c\n")
    assert load_error(path) == (
        f"{path}: invalid YAML on line 2, column 17: mapping values are not allowed here"
    )


def test_unknown_suffix_reports_both_parsers(tmp_path: Path) -> None:
    path = write_text(tmp_path, "bad.txt", "name: [a\n")
    message = load_error(path)
    assert message.startswith(f"{path}: invalid JSON on line 1, column 1: ")
    assert "; invalid YAML on line 2" in message


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ("just text", "expected a list of scenarios, got text"),
        (
            {"name": "Cooking"},
            'expected a list of scenarios or an object with a "scenarios" list, got an object '
            'with the fields "name"; to give a single scenario, put it in a list',
        ),
        (
            {"scenarios": [record()], "version": 2},
            'unknown top-level field "version"; only "scenarios" is allowed there',
        ),
        ({"scenarios": None}, "expected a list of scenarios, got empty (null)"),
        ({"scenarios": {"a": 1}}, "expected a list of scenarios, got an object"),
        ([], "the list of scenarios is empty"),
    ],
)
def test_wrong_shape(tmp_path: Path, data: object, problem: str) -> None:
    path = write_json(tmp_path, data)
    assert load_error(path) == f"{path}: {problem}"


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            ["Cooking"],
            "scenario 1: must be an object with the fields name, description, user_prompt, "
            "ai_role, user_followups, not a list",
        ),
        (record(description=...), 'scenario 1 ("Cooking"): description is missing'),
        (record(user_prompt="   "), 'scenario 1 ("Cooking"): user_prompt is empty'),
        (record(ai_role=None), 'scenario 1 ("Cooking"): ai_role must be text, not empty (null)'),
        (record(name=42), "scenario 1: name must be text, not a number"),
        (record(user_followups=...), 'scenario 1 ("Cooking"): user_followups is missing'),
        (
            record(user_followups={"a": "b"}),
            'scenario 1 ("Cooking"): user_followups must be a list of non-empty strings, '
            "not an object",
        ),
        (
            record(user_followups=[]),
            'scenario 1 ("Cooking"): user_followups is an empty list; give at least one '
            "follow-up question",
        ),
        (
            record(user_followups=["ok", "", 7, None]),
            'scenario 1 ("Cooking"): user_followups must be a list of non-empty strings '
            "(item 2 is empty, item 3 is a number, item 4 is empty (null))",
        ),
        (
            record(user_followup=["x"]),
            'scenario 1 ("Cooking"): unknown field "user_followup" '
            '(did you mean "user_followups"?)',
        ),
        (
            record(key="my key/1"),
            'scenario 1 ("Cooking"): key "my key/1" is not a safe file-name stem; use 1-64 '
            'letters, digits, "-" or "_", starting with a letter or digit',
        ),
        (record(key=True), 'scenario 1 ("Cooking"): key must be text, not true/false'),
        (
            record(name="烹饪"),
            'scenario 1 ("烹饪"): name has no letters or digits (A-Z, 0-9) to make a file-name '
            'key from; add a "key" field (1-64 letters, digits, "-" or "_", starting with a '
            "letter or digit)",
        ),
    ],
)
def test_bad_field(tmp_path: Path, entry: object, problem: str) -> None:
    path = write_json(tmp_path, [entry])
    assert load_error(path) == f"{path}: {problem}"


def test_non_ascii_name_with_key_loads(tmp_path: Path) -> None:
    path = write_json(tmp_path, [record(name="烹饪", key="Cooking")])
    assert load_scenarios_file(path)[0].name == "烹饪"


def test_duplicate_keys_ignore_case(tmp_path: Path) -> None:
    path = write_json(tmp_path, [record(), record(name="Other"), record(name="cooking")])
    assert load_error(path) == (
        f'{path}: scenario 3 ("cooking"): key "Cooking" is already used by scenario 1 '
        '("Cooking") (keys ignore case); give one of them a different "key"'
    )


def test_all_problems_of_a_yaml_file_are_reported_together(tmp_path: Path) -> None:
    path = write_text(
        tmp_path,
        "my.yaml",
        "scenarios:\n"
        "  - name: Cooking\n"
        "    description: d\n"
        "    user_prompt: p\n"
        "    ai_role: r\n"
        "    user_followups: [a]\n"
        "  - name: Gardening\n"
        "    description: d\n"
        "    user_prompt: p\n"
        "    ai_role: [r]\n"
        "    user_followups: [a]\n"
        "  - name: Cooking\n"
        "    description: d\n"
        "    user_prompt: p\n"
        "    ai_role: r\n"
        "    user_followups: ask things\n",
    )
    assert load_error(path).splitlines() == [
        f'{path}: scenario 2 ("Gardening"): ai_role must be text, not a list',
        f'{path}: scenario 3 ("Cooking"): user_followups must be a list of non-empty strings, '
        "not text",
    ]


def test_duplicates_are_reported_with_field_problems(tmp_path: Path) -> None:
    path = write_json(tmp_path, [record(), record(ai_role=""), record(name="Cooking")])
    assert load_error(path).splitlines() == [
        f'{path}: scenario 2 ("Cooking"): ai_role is empty',
        f'{path}: scenario 3 ("Cooking"): key "Cooking" is already used by scenario 1 '
        '("Cooking") (keys ignore case); give one of them a different "key"',
    ]


# --- selection and picking --------------------------------------------------------------------


def test_select_all_builtins_by_default() -> None:
    assert select_scenarios() == list(builtin_scenarios())


def test_select_by_key_or_name_any_case_keeps_order_and_dedupes() -> None:
    picked = select_scenarios(["science q&a", "TOOLUSAGE", " Error Debugging ", "ScienceQA"])
    assert [s.key for s in picked] == ["ScienceQA", "ToolUsage", "ErrorDebugging"]


def test_select_accepts_a_single_name() -> None:
    assert [s.key for s in select_scenarios("CodeOptimization")] == ["CodeOptimization"]


def test_select_unknown_lists_available_keys() -> None:
    with pytest.raises(ScenarioError) as caught:
        select_scenarios(["MachineLearning", "Cooking", "Knitting"])
    assert str(caught.value) == (
        'unknown scenarios "Cooking", "Knitting"; available: ' + ", ".join(BUILTIN_KEYS)
    )


def test_select_with_extra_replaces_builtin_and_appends_new() -> None:
    replacement = Scenario.from_record(record(name="My Science", key="ScienceQA"))
    cooking = Scenario.from_record(record())
    pool = select_scenarios(extra=[replacement, cooking])
    assert [s.key for s in pool] == [*BUILTIN_KEYS, "Cooking"]
    assert pool[2] is replacement
    assert select_scenarios(["my science", "cooking"], extra=[replacement, cooking]) == [
        replacement,
        cooking,
    ]
    with pytest.raises(ScenarioError, match=r"available: .*ScienceQA.*Cooking$"):
        select_scenarios(["Science Q&A"], extra=[replacement, cooking])


def test_pick_is_reproducible_with_a_seed() -> None:
    pool = select_scenarios()
    first = [pick_scenario(pool, random.Random(11)).key for _ in range(3)]
    seeded = random.Random(42)
    again = random.Random(42)
    run_a = [pick_scenario(pool, seeded).key for _ in range(50)]
    run_b = [pick_scenario(pool, again).key for _ in range(50)]
    assert run_a == run_b
    assert len(set(first)) == 1
    assert len(set(run_a)) > 1


def test_pick_covers_the_whole_pool() -> None:
    pool = select_scenarios()
    rng = random.Random(3)
    assert {pick_scenario(pool, rng).key for _ in range(500)} == set(BUILTIN_KEYS)


def test_pick_from_empty_pool() -> None:
    with pytest.raises(ScenarioError, match="no scenarios to pick from"):
        pick_scenario([], random.Random(1))
