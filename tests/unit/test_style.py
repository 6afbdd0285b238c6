"""The style channel: seeded, off at rate 0, code/URLs/paths untouched, edits named apart
from typos; personas: table checks, seeded picks, the dataset-wide mean scale."""

from __future__ import annotations

import pytest

from graph_distill.conversation.personas import (
    PersonaError,
    builtin_personas,
    first_message,
    persona_pool,
    pick_persona,
    turn_ask,
)
from graph_distill.conversation.style import is_style_edit, style_user_message

ALL = {
    "lower_start": 1.0,
    "no_closing_punctuation": 1.0,
    "lower_i": 1.0,
    "greeting": 0.0,
    "sign_off": 0.0,
    "run_on": 1.0,
}


def styled(text: str, seed: int = 1) -> str:
    result = style_user_message(text, seed=seed, user_turn=0, rate=1.0, rates=ALL)
    return text if result is None else result.text


def test_rate_zero_changes_nothing() -> None:
    for seed in range(50):
        assert style_user_message("Hi. I think So. Thanks!", seed=seed, user_turn=0, rate=0) is None


def test_every_mark_at_full_rate() -> None:
    assert styled("Hello, I tried it. It failed again. Thanks!") == "i tried it it failed again"


def test_code_urls_and_paths_stay_untouched() -> None:
    text = "Run `I.Do()` on /usr/I/x. I see ```I. Mean.``` at https://x.io/I."
    out = styled(text)
    for kept in ("`I.Do()`", "/usr/I/x.", "```I. Mean.```", "https://x.io/I."):
        assert kept in out
    assert out.startswith("run") and " i see " in out


def test_seeded_and_named_apart_from_typos() -> None:
    text = "Okay. I looked at it again and I am stuck on step two."
    runs = [style_user_message(text, seed=s, user_turn=3, rate=1.0) for s in range(40)]
    again = [style_user_message(text, seed=s, user_turn=3, rate=1.0) for s in range(40)]
    assert runs == again and len({r.text if r else text for r in runs}) > 2
    assert all(is_style_edit(e) for r in runs if r for e in r.edits)


def test_personas_are_drawn_by_seed_and_scaled_around_one() -> None:
    pool = persona_pool()
    picks = [pick_persona(pool, seed)["name"] for seed in range(200)]
    assert picks == [pick_persona(pool, seed)["name"] for seed in range(200)]
    assert len(set(picks)) == len(builtin_personas())
    mean = sum(p.relative_scale * p.weight for p in pool) / sum(p.weight for p in pool)
    assert mean == pytest.approx(1.0)
    [terse] = persona_pool("terse-impatient")
    [formal] = persona_pool("formal-expert")
    assert terse.relative_scale > 1 > formal.relative_scale


def test_unknown_persona_lists_the_known_ones() -> None:
    with pytest.raises(PersonaError, match="known: casual-intermediate, terse-impatient"):
        persona_pool("nobody")


def test_bit_by_bit_opens_with_one_sentence_and_terse_turns_are_short() -> None:
    record = pick_persona(persona_pool("terse-impatient"), 1)
    assert first_message(record, "I need a plan. It is for a trip.") == "I need a plan."
    asks = [turn_ask(record, 1, turn) for turn in range(1, 40)]
    assert all(ask and 2 <= ask.words <= 12 for ask in asks)
    assert 0 < sum(ask.pushback for ask in asks if ask) < len(asks)
