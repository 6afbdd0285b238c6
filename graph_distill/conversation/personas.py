"""User personas: the built-in table or a personas file, a seeded pick per conversation, and
what a persona asks of the user simulator (the prompt's description, a per-turn target length,
occasional pushback) and of the style channel (how strongly it applies)."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

TRAITS: dict[str, tuple[str, ...]] = {
    "expertise": ("novice", "intermediate", "expert"),
    "verbosity": ("terse", "normal", "rambling", "pastes"),
    "tone": ("casual", "formal", "impatient", "frustrated"),
    "disclosure": ("all_at_once", "bit_by_bit"),
    "english": ("native", "non_native"),
    "patience": ("accepts", "pushes_back"),
}
_BUILTIN_RESOURCE = "data/personas.json"
# Words per user message, drawn per turn; "pastes" turns paste material now and then.
_WORDS = {"terse": (2, 12), "normal": (6, 30), "rambling": (35, 110), "pastes": (6, 30)}
_PASTE_WORDS = (60, 200)
_PASTE_SHARE = 0.35
_PUSHBACK_SHARE = 0.3
# How strongly the style channel applies, relative to the dataset's mean (terse and impatient
# users drop capitals and full stops more, formal ones hardly).
_STYLE_SCALE = {
    "terse": 1.3,
    "rambling": 0.9,
    "casual": 1.2,
    "formal": 0.3,
    "impatient": 1.5,
    "frustrated": 1.3,
    "non_native": 1.1,
}
_PROMPT_LINES = {
    ("expertise", "novice"): "You are new to this subject: you do not know the jargon and "
    "sometimes use the wrong word for things.",
    ("expertise", "intermediate"): "You know the basics of this subject but not the details.",
    ("expertise", "expert"): "You know this subject well and use its terms; you want specifics, "
    "not basics.",
    ("verbosity", "terse"): "You write very short messages, a few words, often not full sentences.",
    ("verbosity", "normal"): "You write short messages, a sentence or two.",
    ("verbosity", "rambling"): "You write long, chatty messages with side details about your "
    "situation.",
    ("verbosity", "pastes"): "You often paste material into the chat (an error message, a draft, "
    "a snippet, some data) with a short line about it.",
    ("tone", "casual"): "Your tone is casual and relaxed.",
    ("tone", "formal"): "Your tone is formal and polite, with complete sentences.",
    ("tone", "impatient"): "You are impatient: you want the answer, not explanations, and say so.",
    ("tone", "frustrated"): "You have already struggled with this and sometimes let your "
    "frustration show.",
    ("disclosure", "all_at_once"): "You say what you need up front.",
    ("disclosure", "bit_by_bit"): "You do not explain everything at once: you reveal your goal "
    "and your situation a bit at a time, a new detail now and then, often only when asked.",
    ("english", "native"): "English is your first language.",
    ("english", "non_native"): "English is not your first language: you make small grammar "
    "slips (articles, verb forms, word order) but are understood.",
    ("patience", "accepts"): "You usually accept a reasonable answer and move on.",
    ("patience", "pushes_back"): "You do not simply agree: when an answer is vague, generic or "
    "wrong, you say so and ask again.",
}


class PersonaError(ValueError):
    """Personas that cannot be used; one plain line per problem."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, kw_only=True)
class Persona:
    name: str
    description: str
    weight: float
    traits: Mapping[str, str]
    # The style scale relative to its table's weighted mean (set by ``persona_pool``).
    relative_scale: float = 1.0

    def style_scale(self) -> float:
        """How strongly the style channel applies to this persona, before normalizing."""
        scale = 1.0
        for value in self.traits.values():
            scale *= _STYLE_SCALE.get(value, 1.0)
        return scale

    def to_record(self, relative_scale: float) -> dict[str, Any]:
        """``metadata.persona`` of a conversation file (and the graph's ``persona`` input)."""
        return {
            "name": self.name,
            "description": self.description,
            "traits": dict(self.traits),
            "style_scale": round(relative_scale, 4),
        }


@cache
def builtin_personas() -> tuple[Persona, ...]:
    text = (
        resources.files("graph_distill.conversation").joinpath(_BUILTIN_RESOURCE).read_text("utf-8")
    )
    return tuple(_personas_from_data(json.loads(text), f"graph_distill/{_BUILTIN_RESOURCE}"))


def load_personas_file(path: str | Path) -> list[Persona]:
    """Personas from a JSON or YAML file holding a list or ``{"personas": [...]}``."""
    source = str(path)
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PersonaError(f"{source}: cannot read it ({error})") from None
    if not text.strip():
        raise PersonaError(f"{source}: the file is empty; expected a list of personas")
    try:
        data = json.loads(text) if Path(path).suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        first = str(error).splitlines()[0]
        raise PersonaError(f"{source}: not valid JSON or YAML ({first})") from None
    return _personas_from_data(data, source)


def persona_pool(name: str | None = None, personas_file: str | Path | None = None) -> list[Persona]:
    """The personas a run draws from: the file's (else the built-in table), only ``name``'s
    when given (PersonaError naming the known ones when there is no such persona)."""
    table = load_personas_file(personas_file) if personas_file else list(builtin_personas())
    mean = sum(p.style_scale() * p.weight for p in table) / sum(p.weight for p in table)
    pool = [replace(p, relative_scale=p.style_scale() / mean) for p in table]
    if name is None:
        return pool
    chosen = [p for p in pool if p.name.casefold() == name.strip().casefold()]
    if not chosen:
        known = ", ".join(p.name for p in pool)
        raise PersonaError(f"--persona {name!r}: no such persona; known: {known}")
    return chosen


def pool_digest(pool: Sequence[Persona]) -> str:
    """The pool as a resumed run must find it again."""
    text = json.dumps([p.to_record(p.weight) for p in pool], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pick_persona(pool: Sequence[Persona], seed: int) -> dict[str, Any]:
    """The conversation's persona record, drawn by weight with its own seeded stream (the
    scenario and round draws are not shifted); its style scale is relative to the table's
    mean, so that the dataset-wide style shares stay the calibrated ones."""
    if not pool:
        raise PersonaError("no personas to pick from")
    weights = [p.weight for p in pool]
    persona = _seeded("persona", seed).choices(pool, weights=weights)[0]
    return persona.to_record(persona.relative_scale)


def persona_prompt(record: Mapping[str, Any]) -> str:
    """The persona as the user simulator's system prompt describes it."""
    traits = record.get("traits") or {}
    lines = [_PROMPT_LINES[(trait, traits[trait])] for trait in TRAITS if trait in traits]
    description = str(record.get("description") or "").strip()
    return " ".join([description, *lines]).strip()


def first_message(record: Mapping[str, Any] | None, user_prompt: str) -> str:
    """The opening message: all of the scenario's prompt, or only its first sentence for a
    persona that reveals the goal bit by bit (the rest comes out as the chat goes on)."""
    traits = (record or {}).get("traits") or {}
    if traits.get("disclosure") != "bit_by_bit":
        return user_prompt
    for end in (". ", "? ", "! "):
        cut = user_prompt.find(end)
        if 0 < cut < len(user_prompt) - 2:
            return user_prompt[: cut + 1]
    return user_prompt


@dataclass(frozen=True)
class TurnAsk:
    words: int
    paste: bool
    pushback: bool


def turn_ask(record: Mapping[str, Any] | None, seed: int, user_turn: int) -> TurnAsk | None:
    """What this turn asks of the simulator: a target length drawn from the persona's
    distribution, pasted material, pushback; None without a persona."""
    if not record:
        return None
    traits = record.get("traits") or {}
    rng = _seeded("turn", seed, user_turn)
    verbosity = traits.get("verbosity", "normal")
    paste = verbosity == "pastes" and rng.random() < _PASTE_SHARE
    low, high = _PASTE_WORDS if paste else _WORDS.get(verbosity, _WORDS["normal"])
    pushback = traits.get("patience") == "pushes_back" and rng.random() < _PUSHBACK_SHARE
    return TurnAsk(rng.randint(low, high), paste, pushback)


def _seeded(*parts: object) -> random.Random:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _personas_from_data(data: Any, source: str) -> list[Persona]:
    if isinstance(data, dict) and "personas" in data:
        data = data["personas"]
    if not isinstance(data, list) or not data:
        raise PersonaError(
            f'{source}: expected a non-empty list of personas or {{"personas": [...]}}'
        )
    problems: list[str] = []
    personas: list[Persona] = []
    names: set[str] = set()
    for index, item in enumerate(data, 1):
        where = f"{source}: persona {index}"
        if not isinstance(item, dict):
            problems.append(f"{where}: expected an object with name and traits")
            continue
        found = _problems(item)
        name = item.get("name")
        if isinstance(name, str) and name.strip():
            where += f" ({name.strip()})"
            if name.strip().casefold() in names:
                found.append(f"name: {name.strip()!r} is used twice")
            names.add(name.strip().casefold())
        problems.extend(f"{where}: {problem}" for problem in found)
        if not found:
            personas.append(
                Persona(
                    name=item["name"].strip(),
                    description=str(item.get("description") or "").strip(),
                    weight=float(item.get("weight", 1)),
                    traits={trait: item[trait] for trait in TRAITS},
                )
            )
    if problems:
        raise PersonaError(problems)
    return personas


def _problems(item: Mapping[str, Any]) -> list[str]:
    problems = []
    if not isinstance(item.get("name"), str) or not item["name"].strip():
        problems.append("name: must be a non-empty string")
    description = item.get("description", "")
    if not isinstance(description, str):
        problems.append("description: must be a string")
    weight = item.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        problems.append(f"weight: must be a number above 0 (got {weight!r})")
    for trait, values in TRAITS.items():
        if item.get(trait) not in values:
            got = f"got {item[trait]!r}" if trait in item else "missing"
            problems.append(f"{trait}: must be one of {', '.join(values)} ({got})")
    allowed = {"name", "description", "weight", *TRAITS}
    problems.extend(f"{key}: unknown field" for key in item if key not in allowed)
    return problems
