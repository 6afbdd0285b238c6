"""The scenario library: built-in scenarios, scenario files, selection and seeded picking."""

from __future__ import annotations

import difflib
import json
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

RECORD_FIELDS = ("name", "description", "user_prompt", "ai_role", "user_followups")
TEXT_FIELDS = ("name", "description", "user_prompt", "ai_role")
ALLOWED_FIELDS = ("key", *RECORD_FIELDS)
KEY_MAX_LENGTH = 64
KEY_RULE = f'1-{KEY_MAX_LENGTH} letters, digits, "-" or "_", starting with a letter or digit'
FOLLOWUPS_RULE = "user_followups must be a list of non-empty strings"

_KEY_PATTERN = re.compile(rf"[A-Za-z0-9][A-Za-z0-9_-]{{0,{KEY_MAX_LENGTH - 1}}}")
_WORD_PATTERN = re.compile(r"[A-Za-z0-9]+")
_BUILTIN_RESOURCE = "data/scenarios.json"
_FORMATS: dict[str, tuple[str, Callable[[str], Any]]] = {
    ".json": ("JSON", json.loads),
    ".yaml": ("YAML", yaml.safe_load),
    ".yml": ("YAML", yaml.safe_load),
}


class ScenarioError(ValueError):
    """Scenarios that cannot be used; ``problems`` holds one plain sentence per problem."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = (problems,) if isinstance(problems, str) else tuple(problems)
        super().__init__("\n".join(self.problems))


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One conversation setting; ``key`` names its conversation files."""

    key: str
    name: str
    description: str
    user_prompt: str
    ai_role: str
    user_followups: tuple[str, ...]

    def to_record(self) -> dict[str, Any]:
        """The ``scenario`` object of a conversation file (the key is not part of it)."""
        return {
            "name": self.name,
            "description": self.description,
            "user_prompt": self.user_prompt,
            "ai_role": self.ai_role,
            "user_followups": list(self.user_followups),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any], *, where: str = "") -> Scenario:
        """A validated scenario, keyed by ``derive_key(name)`` unless the record has a ``key``.

        ``where`` (e.g. ``'my.yaml: scenario 3 ("Cooking")'``) prefixes every reported problem.
        """
        problems = _record_problems(record)
        if problems:
            prefix = f"{where}: " if where else ""
            raise ScenarioError(prefix + problem for problem in problems)
        return cls(
            key=record["key"] if "key" in record else derive_key(record["name"]),
            name=record["name"].strip(),
            description=record["description"].strip(),
            user_prompt=record["user_prompt"].strip(),
            ai_role=record["ai_role"].strip(),
            user_followups=tuple(followup.strip() for followup in record["user_followups"]),
        )


def derive_key(name: str) -> str:
    """CamelCase of the ASCII letter/digit words of ``name`` ("Science Q&A" -> "ScienceQA")."""
    words = _WORD_PATTERN.findall(name)
    return "".join(word[0].upper() + word[1:] for word in words)[:KEY_MAX_LENGTH]


@cache
def builtin_scenarios() -> tuple[Scenario, ...]:
    """The ten scenarios shipped with the package, in their documented order."""
    text = (
        resources.files("graph_distill.conversation").joinpath(_BUILTIN_RESOURCE).read_text("utf-8")
    )
    return tuple(_scenarios_from_data(json.loads(text), f"graph_distill/{_BUILTIN_RESOURCE}"))


def load_scenarios_file(path: str | Path) -> list[Scenario]:
    """Scenarios from a JSON or YAML file holding a list or ``{"scenarios": [...]}``."""
    source = str(path)
    text = _read_text(Path(path), source)
    if not text.strip():
        raise ScenarioError(f"{source}: the file is empty; expected a list of scenarios")
    return _scenarios_from_data(_parse(text, Path(path).suffix.lower(), source), source)


def select_scenarios(names: Sequence[str] = (), extra: Sequence[Scenario] = ()) -> list[Scenario]:
    """The named scenarios (by key or name, any case) from builtins plus ``extra``; all if none."""
    pool = _merge(builtin_scenarios(), extra)
    if isinstance(names, str):
        names = (names,)
    if not names:
        return pool
    selected: list[Scenario] = []
    unknown: list[str] = []
    for wanted in names:
        match = _find(pool, wanted)
        if match is None:
            unknown.append(wanted)
        elif match not in selected:
            selected.append(match)
    if unknown:
        label = "scenario" if len(unknown) == 1 else "scenarios"
        raise ScenarioError(
            f"unknown {label} {_quoted_list(unknown)}; available: "
            + ", ".join(scenario.key for scenario in pool)
        )
    return selected


def pick_scenario(pool: Sequence[Scenario], rng: random.Random) -> Scenario:
    """One scenario drawn uniformly from ``pool`` with ``rng``."""
    if not pool:
        raise ScenarioError("no scenarios to pick from")
    return rng.choice(pool)


def _merge(builtins: Sequence[Scenario], extra: Sequence[Scenario]) -> list[Scenario]:
    by_key = {scenario.key.casefold(): scenario for scenario in builtins}
    by_key.update((scenario.key.casefold(), scenario) for scenario in extra)
    return list(by_key.values())


def _find(pool: Sequence[Scenario], wanted: str) -> Scenario | None:
    folded = wanted.strip().casefold()
    by_key = (scenario for scenario in pool if scenario.key.casefold() == folded)
    by_name = (scenario for scenario in pool if scenario.name.casefold() == folded)
    return next(by_key, None) or next(by_name, None)


def _read_text(path: Path, source: str) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise ScenarioError(f"{source}: is a directory, not a scenarios file") from None
    except OSError as error:
        raise ScenarioError(f"{source}: cannot read the file ({error.strerror or error})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise ScenarioError(
            f"{source}: not UTF-8 text (byte 0x{raw[error.start]:02x} on line {line}); "
            "save the file as UTF-8"
        ) from None


def _parse(text: str, suffix: str, source: str) -> Any:
    formats = [_FORMATS[suffix]] if suffix in _FORMATS else [_FORMATS[".json"], _FORMATS[".yaml"]]
    failures = []
    for label, load in formats:
        try:
            return load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as error:
            failures.append(f"invalid {label}{_parse_error_detail(error)}")
    raise ScenarioError(f"{source}: " + "; ".join(failures))


def _parse_error_detail(error: json.JSONDecodeError | yaml.YAMLError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f" on line {error.lineno}, column {error.colno}: {error.msg}"
    mark = getattr(error, "problem_mark", None)
    reason = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f": {reason}"
    return f" on line {mark.line + 1}, column {mark.column + 1}: {reason}"


def _scenarios_from_data(data: Any, source: str) -> list[Scenario]:
    numbered: list[tuple[int, Scenario]] = []
    problems: list[str] = []
    for number, record in enumerate(_records_of(data, source), start=1):
        name = record.get("name") if isinstance(record, Mapping) else None
        try:
            numbered.append(
                (number, Scenario.from_record(record, where=_where(source, number, name)))
            )
        except ScenarioError as error:
            problems.extend(error.problems)
    problems.extend(_duplicate_key_problems(numbered, source))
    if problems:
        raise ScenarioError(problems)
    return [scenario for _, scenario in numbered]


def _records_of(data: Any, source: str) -> list[Any]:
    if isinstance(data, Mapping):
        if "scenarios" not in data:
            hint = "; to give a single scenario, put it in a list" if "name" in data else ""
            raise ScenarioError(
                f'{source}: expected a list of scenarios or an object with a "scenarios" list, '
                f"got an object with the fields {_quoted_list(data)}{hint}"
            )
        others = [field for field in data if field != "scenarios"]
        if others:
            raise ScenarioError(
                f'{source}: unknown top-level field {_quoted_list(others)}; only "scenarios" '
                "is allowed there"
            )
        data = data["scenarios"]
    if not isinstance(data, list):
        raise ScenarioError(f"{source}: expected a list of scenarios, got {_kind(data)}")
    if not data:
        raise ScenarioError(f"{source}: the list of scenarios is empty")
    return data


def _record_problems(record: object) -> list[str]:
    if not isinstance(record, Mapping):
        return [
            f"must be an object with the fields {', '.join(RECORD_FIELDS)}, not {_kind(record)}"
        ]
    problems = [_text_problem(record, field) for field in TEXT_FIELDS]
    problems += [_followups_problem(record), _key_problem(record)]
    problems += [_unknown_field_problem(field) for field in record if field not in ALLOWED_FIELDS]
    return [problem for problem in problems if problem]


def _text_problem(record: Mapping[str, Any], field: str) -> str | None:
    if field not in record:
        return f"{field} is missing"
    value = record[field]
    if not isinstance(value, str):
        return f"{field} must be text, not {_kind(value)}"
    return None if value.strip() else f"{field} is empty"


def _followups_problem(record: Mapping[str, Any]) -> str | None:
    if "user_followups" not in record:
        return "user_followups is missing"
    followups = record["user_followups"]
    if not isinstance(followups, list | tuple):
        return f"{FOLLOWUPS_RULE}, not {_kind(followups)}"
    if not followups:
        return "user_followups is an empty list; give at least one follow-up question"
    bad_items = [
        f"item {number} is {'empty' if isinstance(item, str) else _kind(item)}"
        for number, item in enumerate(followups, start=1)
        if not (isinstance(item, str) and item.strip())
    ]
    return f"{FOLLOWUPS_RULE} ({', '.join(bad_items)})" if bad_items else None


def _key_problem(record: Mapping[str, Any]) -> str | None:
    if "key" in record:
        key = record["key"]
        if not isinstance(key, str):
            return f"key must be text, not {_kind(key)}"
        if not _KEY_PATTERN.fullmatch(key):
            return f"key {_quote(key)} is not a safe file-name stem; use {KEY_RULE}"
        return None
    name = record.get("name")
    if isinstance(name, str) and name.strip() and not derive_key(name):
        return (
            "name has no letters or digits (A-Z, 0-9) to make a file-name key from; "
            f'add a "key" field ({KEY_RULE})'
        )
    return None


def _unknown_field_problem(field: object) -> str:
    close = difflib.get_close_matches(str(field), ALLOWED_FIELDS, n=1)
    hint = f'did you mean "{close[0]}"?' if close else f"allowed: {', '.join(ALLOWED_FIELDS)}"
    return f"unknown field {_quote(str(field))} ({hint})"


def _duplicate_key_problems(numbered: list[tuple[int, Scenario]], source: str) -> list[str]:
    first_by_key: dict[str, tuple[int, Scenario]] = {}
    problems = []
    for number, scenario in numbered:
        first_number, first = first_by_key.setdefault(scenario.key.casefold(), (number, scenario))
        if first_number != number:
            problems.append(
                f"{_where(source, number, scenario.name)}: key {_quote(scenario.key)} is "
                f"already used by {_where('', first_number, first.name)} (keys ignore case); "
                'give one of them a different "key"'
            )
    return problems


def _where(source: str, number: int, name: object) -> str:
    label = f"scenario {number}"
    if isinstance(name, str) and name.strip():
        label += f" ({_quote(name.strip())})"
    return f"{source}: {label}" if source else label


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _quoted_list(items: Iterable[object]) -> str:
    return ", ".join(_quote(str(item)) for item in items)


def _kind(value: object) -> str:
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"
