"""Personas and the style channel through the command line: the dataset's style shares land
near the calibrated real-user shares, every file records a persona, the off switch, personas
files and names checked before any call, and --resume refusing other personas."""

from __future__ import annotations

import json
from pathlib import Path

from graph_distill.conversation.noise import noise_user_message
from graph_distill.conversation.style import calibrated_rates, is_style_edit
from graph_distill.export.rows import messages_of
from graph_distill.report import markers
from graph_distill.report.dataset import Conversation
from tests.integration.test_cli import conversations, invoke, run_args
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.roles import RoleResponder

_OPENERS = ("Hi, ", "Hello! ", "", "", "", "", "", "")
_BODIES = (
    "I tried the {n} step you gave me. It still fails on the {w} part.",
    "Can you explain the {w} bit again? I am not sure I follow step {n}.",
    "That helps with {w}. What should I do about point {n} now?",
    "Okay so I looked at {w} again. Number {n} is where I get stuck!",
)
_WORDS = "budget kernel garden ledger recipe bridge sensor draft harbor cache lesson".split()


def human(n: int) -> str:
    text = _OPENERS[n % len(_OPENERS)] + _BODIES[n % len(_BODIES)]
    return text.format(n=n, w=_WORDS[(n * 7) % len(_WORDS)] + str(n))


def user_texts(tmp: Path) -> list[str]:
    return [
        m["content"]
        for record in conversations(tmp)
        for m in record["conversation"]
        if m["role"] == "user"
    ]


def share(flags: list[bool | None]) -> float:
    known = [flag for flag in flags if flag is not None]
    return sum(known) / len(known)


def test_forty_conversations_land_near_real_users_style_and_record_personas(
    tmp_path: Path,
) -> None:
    with FakeOpenAIServer(RoleResponder(user=human)) as server:
        # -j 1: the fake user's n-th answer goes to whichever conversation asks n-th, so only
        # one at a time gives the same texts, hence the same shares, on every run and path.
        args = run_args(server, tmp_path, "-n", "40", "--seed", "5", "--no-distill", "-j", "1")
        result = invoke(*args)
    assert result.exit_code == 0, result.output
    texts = user_texts(tmp_path)
    targets = calibrated_rates()
    assert abs(share([markers.starts_lower(t) for t in texts]) - targets["lower_start"]) < 0.1
    bare = share([markers.ends_unpunctuated(t) for t in texts])
    assert abs(bare - targets["no_closing_punctuation"]) < 0.1
    with_i = [t for t in texts if markers.has_pronoun_i(t)]
    assert abs(share([markers.has_lower_i(t) for t in with_i]) - targets["lower_i"]) < 0.1
    assert abs(share([markers.opens_with_greeting(t) for t in texts]) - targets["greeting"]) < 0.1
    records = conversations(tmp_path)
    assert len(records) == 40
    personas = [record["metadata"]["persona"] for record in records]
    assert all(p["name"] and set(p["traits"]) >= {"tone", "verbosity"} for p in personas)
    assert len({p["name"] for p in personas}) >= 4
    # Styled turns keep their clean text, and export --clean gives it back.
    styled = 0
    for record in records:
        conversation = Conversation(0, "k", "s", record["conversation"], record, None)
        clean = messages_of(conversation, clean=True)
        for turn, entry in conversation.noise().items():
            assert (
                clean[turn]["content"] == entry["clean"] != record["conversation"][turn]["content"]
            )
            styled += any(is_style_edit(edit) for edit in entry["edits"])
    assert styled > 20


def test_style_rate_zero_leaves_only_the_typo_channel(tmp_path: Path) -> None:
    with FakeOpenAIServer(RoleResponder(user=human)) as server:
        options = ("-n", "6", "--seed", "5", "--no-distill", "--style-rate", "0")
        result = invoke(*run_args(server, tmp_path, *options, "--typo-rate", "0.5"))
    assert result.exit_code == 0, result.output
    for record in conversations(tmp_path):
        entries = {n["turn"]: n for n in record["metadata"]["noise"]}
        user_turn = 0
        for turn, message in enumerate(record["conversation"]):
            if message["role"] != "user":
                continue
            clean = entries[turn]["clean"] if turn in entries else message["content"]
            typos = noise_user_message(
                clean, seed=record["metadata"]["seed"], user_turn=user_turn, rate=0.5
            )
            assert message["content"] == (clean if typos is None else typos.text)
            assert not any(is_style_edit(e) for e in entries.get(turn, {}).get("edits", []))
            user_turn += 1


def test_a_fixed_persona_is_given_to_every_conversation(tmp_path: Path) -> None:
    with FakeOpenAIServer(RoleResponder(user=human)) as server:
        options = ("-n", "3", "--seed", "2", "--no-distill", "--persona", "terse-impatient")
        result = invoke(*run_args(server, tmp_path, *options))
        systems = [r["messages"][0]["content"] for r in server.requests]
    [system, *_] = [s for s in systems if s.startswith("You are role-playing")]
    assert result.exit_code == 0, result.output
    assert {r["metadata"]["persona"]["name"] for r in conversations(tmp_path)} == {
        "terse-impatient"
    }
    assert "impatient" in system


def test_unknown_persona_and_bad_personas_file_are_refused_before_any_call(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "personas.yaml"
    bad.write_text("- name: a\n  tone: grumpy\n  expertise: expert\n")
    with FakeOpenAIServer(RoleResponder()) as server:
        unknown = invoke(*run_args(server, tmp_path, "--persona", "nobody"))
        broken = invoke(*run_args(server, tmp_path, "--personas-file", str(bad)))
        assert server.calls == 0
    assert unknown.exit_code == 2
    assert "nobody" in unknown.output and "terse-impatient" in unknown.output
    assert broken.exit_code == 2
    lines = [line for line in broken.output.splitlines() if "persona 1 (a)" in line]
    assert any("tone: must be one of" in line and "grumpy" in line for line in lines)
    assert any("verbosity: must be one of" in line and "missing" in line for line in lines)
    assert "Traceback" not in broken.output


def test_a_personas_file_is_used_and_resume_with_other_personas_is_refused(
    tmp_path: Path,
) -> None:
    table = tmp_path / "personas.json"
    traits = {
        "expertise": "expert",
        "verbosity": "terse",
        "tone": "formal",
        "disclosure": "all_at_once",
        "english": "native",
        "patience": "accepts",
    }
    table.write_text(json.dumps([{"name": "only-one", **traits}]))
    with FakeOpenAIServer(RoleResponder(user=human)) as server:
        options = (
            "-n",
            "2",
            "-j",
            "1",
            "--seed",
            "3",
            "--no-distill",
            "--personas-file",
            str(table),
        )
        first = invoke(*run_args(server, tmp_path, *options, "--budget-tokens", "1"))
        assert first.exit_code == 0, first.output
        table.write_text(json.dumps([{"name": "only-one", **traits, "tone": "casual"}]))
        assert {r["metadata"]["persona"]["name"] for r in conversations(tmp_path)} == {"only-one"}
        resumed = invoke(*run_args(server, tmp_path, *options, "--resume"))
    assert resumed.exit_code == 2
    assert "--personas-file (the personas' traits)" in resumed.output
