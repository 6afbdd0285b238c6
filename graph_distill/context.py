"""The graphs' settings (LangGraph ``context_schema``), each declared once.

A field's metadata says all there is to know about it: its description (Studio shows it, the
CLI's ``--help`` too), the command-line flag and environment variable that set it, the bounds
it must keep, and whether a resumed run must keep its value. The CLI, the validation, the run
report and the resume check are all derived from these declarations. Contexts stay plain data:
Studio and HTTP clients send them as JSON.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterator, Mapping
from dataclasses import Field, dataclass, field, fields
from pathlib import Path
from typing import Any

from dotenv import dotenv_values


class SettingError(ValueError):
    """A setting is out of bounds or at odds with another; one plain line naming the flag."""


def setting(
    default: Any,
    description: str,
    *,
    flag: str | None = None,
    env: str | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    choices: tuple[str, ...] | None = None,
    resume: bool = False,
    secret: bool = False,
) -> Any:
    """A settings field. ``minimum``/``maximum`` are inclusive bounds, ``above`` an exclusive
    lower one; ``resume`` marks a setting a resumed run must share with the run it finishes;
    ``secret`` keeps the value out of repr, reports and messages."""
    metadata = {
        "description": description,
        "flag": flag,
        "env": env,
        "minimum": minimum,
        "maximum": maximum,
        "above": above,
        "choices": choices,
        "resume": resume,
        "secret": secret,
    }
    return field(default=default, metadata=metadata, repr=not secret)


def declared(cls_or_instance: Any) -> Iterator[Field[Any]]:
    """The settings fields of a settings dataclass (or of an instance)."""
    return iter(fields(cls_or_instance))


def flag_of(item: Field[Any]) -> str:
    """How a user names a setting: its flag, else its field name."""
    return item.metadata.get("flag") or item.name


def check_bounds(settings: Any) -> None:
    """SettingError for the first value outside its declared bounds (None is always allowed:
    it means "derived" or "not set")."""
    for item in declared(settings):
        value = getattr(settings, item.name)
        if value is None or isinstance(value, bool):
            continue
        problem = _bound_problem(item, value)
        if problem:
            raise SettingError(f"{flag_of(item)} {problem}")


def _bound_problem(item: Field[Any], value: Any) -> str | None:
    meta = item.metadata
    choices = meta.get("choices")
    if choices and value not in choices:
        return f"must be one of {', '.join(choices)} (got {value!r})"
    if not isinstance(value, int | float):
        return None
    if meta.get("minimum") is not None and value < meta["minimum"]:
        return f"must be at least {meta['minimum']:g} (got {value:g})"
    if meta.get("maximum") is not None and value > meta["maximum"]:
        return f"must be at most {meta['maximum']:g} (got {value:g})"
    if meta.get("above") is not None and value <= meta["above"]:
        return f"must be more than {meta['above']:g} (got {value:g})"
    return None


def recorded(settings: Any) -> dict[str, Any]:
    """Every setting but the secret ones, as JSON values (for reports and resume checks)."""
    return {
        item.name: _json_value(getattr(settings, item.name))
        for item in declared(settings)
        if not item.metadata.get("secret")
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def from_environment(
    cls: type,
    skip: Collection[str] = (),
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> dict[str, Any]:
    """Values of ``cls``'s fields (but ``skip``) from their environment variables, then
    ``.env``; blank values count as unset. Text settings and switches (1/0, true/false,
    yes/no, on/off) declare variables."""
    environ = os.environ if environ is None else environ
    dotenv: list[Mapping[str, str | None]] = []
    found: dict[str, Any] = {}
    for item in declared(cls):
        name = item.metadata.get("env")
        if not name or item.name in skip:
            continue
        value = environ.get(name)
        if not (value and value.strip()):
            if not dotenv:  # read only when needed, once
                # Relative, not Path.cwd(): os.getcwd is a blocking call inside langgraph dev.
                path = (cwd or Path()) / ".env"
                dotenv.append(dotenv_values(path) if path.is_file() else {})
            value = dotenv[0].get(name)
        if value and value.strip():
            found[item.name] = value.strip()
            if isinstance(item.default, bool):
                found[item.name] = _switch(name, value.strip())
    return found


_SWITCH_VALUES = {"1": True, "true": True, "yes": True, "on": True} | {
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _switch(env: str, value: str) -> bool:
    try:
        return _SWITCH_VALUES[value.lower()]
    except KeyError:
        raise SettingError(f"{env} must be 1 or 0 (got {value!r})") from None


@dataclass(kw_only=True)
class ModelContext:
    """Which server and models to call. Unset fields come from MIMO_* env / ``.env``."""

    base_url: str | None = setting(
        None,
        "OpenAI-compatible base URL (default https://api.xiaomimimo.com/v1).",
        flag="--base-url",
        env="MIMO_BASE_URL",
    )
    api_key: str | None = setting(
        None, "API key. Never printed or saved.", flag="--api-key", env="MIMO_API_KEY", secret=True
    )
    model: str | None = setting(
        None, "Model for every role (default mimo-v2-flash).", flag="--model", env="MIMO_MODEL"
    )
    request_timeout: float = setting(120.0, "Seconds before one model request times out.", above=0)
    max_retries: int = setting(
        3, "Client retries for 429/5xx/timeouts (Retry-After honoured).", minimum=0
    )
    requests_per_minute: float | None = setting(
        None,
        "Most model requests per minute across the whole run, all roles and retries included "
        "(default: no cap; 429s are still retried, honouring Retry-After).",
        flag="--rpm",
        above=0,
    )
    stock: bool = setting(
        False,
        "Call models with the libraries' public APIs only: a stock ChatOpenAI on its own "
        "(throttled) httpx client, and the stock checkpointer. Same requests and "
        "conversations, more client time per call at high concurrency; taken anyway when a "
        "library's internals the fast path uses have changed.",
        flag="--stock",
        env="GRAPH_DISTILL_STOCK",
    )


@dataclass(kw_only=True)
class ConversationContext(ModelContext):
    """Settings of conversation generation."""

    user_model: str | None = setting(
        None,
        "Model playing the user (default: --model).",
        flag="--user-model",
        env="MIMO_USER_MODEL",
    )
    assistant_model: str | None = setting(
        None,
        "Model playing the assistant (default: --model).",
        flag="--assistant-model",
        env="MIMO_ASSISTANT_MODEL",
    )
    min_rounds: int = setting(
        30,
        "Fewest rounds (one user message + the reply) per conversation.",
        flag="--min-rounds",
        minimum=1,
        resume=True,
    )
    max_rounds: int = setting(
        100,
        "Most rounds; each conversation's target is drawn from [min, max].",
        flag="--max-rounds",
        minimum=1,
        resume=True,
    )
    typo_rate: float = setting(
        0.12,
        "Share of USER MESSAGES (per message, not per word) that get typos or grammar slips.",
        flag="--typo-rate",
        minimum=0.0,
        maximum=1.0,
        resume=True,
    )
    style_rate: float = setting(
        1.0,
        "Scale of the style channel (lower-case starts, no closing punctuation, a lower-case "
        '"i", no greetings or sign-offs, run-on sentences) on user messages: 1 applies the '
        "shares measured on real ShareGPT users, 0 turns it off. Typos are --typo-rate's.",
        flag="--style-rate",
        minimum=0.0,
        maximum=1.0,
        resume=True,
    )
    persona: str | None = setting(
        None,
        "Give every conversation this user persona (a name from the built-in table or "
        "--personas-file). Default: each conversation draws one by weight, from its seed.",
        flag="--persona",
        resume=True,
    )
    personas_file: str | None = setting(
        None,
        "JSON or YAML file of user personas (name, weight, description and the traits "
        "expertise, verbosity, tone, disclosure, english, patience) used instead of the "
        "built-in table.",
        flag="--personas-file",
    )
    user_temperature: float = setting(0.9, "Sampling temperature of the simulated user.", minimum=0)
    assistant_temperature: float = setting(0.7, "Sampling temperature of the assistant.", minimum=0)
    max_output_tokens: int = setting(1024, "Most tokens one chat reply may have.", minimum=1)
    history_budget_tokens: int = setting(
        24000,
        "Most prompt tokens of history sent per call; older turns are cut in steps.",
        minimum=1,
    )
    history_cut_step: int = setting(
        16,
        "Messages dropped at once when history must be cut (keeps prompt prefixes cached).",
        minimum=1,
    )
    copy_threshold: float = setting(
        0.6,
        "Share of a message's word triples found in an earlier message (same side, or the "
        "other side's last message) above which it counts as a copy or an echo.",
        minimum=0.0,
        maximum=1.0,
    )
    repeat_window: int = setting(
        6,
        "Earlier rounds a message is compared with for copies (at most 16); a questionnaire "
        "restarted by the user repeats rounds from long ago without looping.",
        minimum=1,
        maximum=16,
    )
    opening_words: int = setting(
        10,
        "Words at the start of a message compared with another's opening: loops keep their "
        "first sentence and vary the tail (at most 16).",
        minimum=1,
        maximum=16,
    )
    self_repeat_threshold: float = setting(
        0.5,
        "Share of a message's sentences repeating an earlier one in it that flags it.",
        minimum=0.0,
        maximum=1.0,
    )
    min_novelty: float = setting(
        0.4,
        "Share of new content words under which a round of mutual praise is empty.",
        minimum=0.0,
        maximum=1.0,
    )
    stall_rounds: int = setting(
        2,
        "Rounds in a row that must show copies, echoes or empty praise to make a stall.",
        minimum=1,
    )
    drift_window: int = setting(
        6, "Rounds whose words are compared with the scenario's.", minimum=1
    )
    drift_threshold: float = setting(
        0.03,
        "Similarity to the scenario's words under which the recent rounds have drifted "
        "(0: drift is not looked at).",
        minimum=0.0,
        maximum=1.0,
    )
    stall_retry_rounds: int = setting(
        4,
        "A stall found within this many rounds of a topic switch means the switch did not take: "
        "the next switch adds repetition penalties and a firmer steer, the one after ends the "
        "conversation as 'stalled'.",
        minimum=0,
    )
    repetition_penalty: float = setting(
        0.8,
        "frequency_penalty and presence_penalty sent after a switch that did not take.",
        minimum=-2.0,
        maximum=2.0,
    )
    max_role_retries: int = setting(
        2, "Regenerations of a user message that breaks role.", minimum=0
    )

    def check(self) -> None:
        """SettingError when a value, or a pair of values, cannot work."""
        check_bounds(self)
        if self.min_rounds > self.max_rounds:
            raise SettingError(
                f"--min-rounds ({self.min_rounds}) must not exceed --max-rounds ({self.max_rounds})"
            )


# Default overlaps, capped so that any chunk size works (see DistillContext).
OVERLAP_TOKENS = 200
OVERLAP_TURNS = 2


@dataclass(kw_only=True)
class DistillContext(ModelContext):
    """Settings of distillation."""

    distill_model: str | None = setting(
        None,
        "Model writing the notes (default: --model).",
        flag="--distill-model",
        env="MIMO_DISTILL_MODEL",
    )
    split_method: str = setting(
        "tokens",
        "Split conversations by token count or by messages.",
        flag="--split-method",
        choices=("tokens", "turns"),
        resume=True,
    )
    max_tokens: int = setting(
        4000,
        "Most tokens per chunk when splitting by tokens.",
        flag="--max-tokens",
        minimum=8,
        resume=True,
    )
    overlap_tokens: int | None = setting(
        None,
        f"Tokens of messages shared by consecutive chunks (default: {OVERLAP_TOKENS}, "
        "at most half a chunk).",
        flag="--overlap-tokens",
        minimum=0,
        resume=True,
    )
    max_turns: int = setting(
        10,
        "Messages per chunk when splitting by turns.",
        flag="--max-turns",
        minimum=1,
        resume=True,
    )
    overlap_turns: int | None = setting(
        None,
        f"Messages shared by consecutive chunks when splitting by turns (default: "
        f"{OVERLAP_TURNS}, at most half a chunk).",
        flag="--overlap-turns",
        minimum=0,
        resume=True,
    )
    distill_temperature: float = setting(0.3, "Sampling temperature of distillation.", minimum=0)
    distill_max_output_tokens: int = setting(2000, "Most tokens of one notes reply.", minimum=1)
    notes_budget_tokens: int = setting(
        6000,
        "Most tokens of notes merged in one reduce call; more are collapsed in groups.",
        minimum=1,
    )

    def token_overlap(self) -> int:
        """The overlap in tokens: as given, else the default capped to below half a chunk."""
        if self.overlap_tokens is not None:
            return self.overlap_tokens
        return min(OVERLAP_TOKENS, (self.max_tokens - 1) // 2)

    def turn_overlap(self) -> int:
        """The overlap in messages: as given, else min(2, (max_turns - 1) // 2)."""
        if self.overlap_turns is not None:
            return self.overlap_turns
        return min(OVERLAP_TURNS, (self.max_turns - 1) // 2)

    def check(self) -> None:
        """SettingError when a value, or a pair of values, cannot work."""
        check_bounds(self)
        if self.token_overlap() >= self.max_tokens:
            raise SettingError(
                f"--overlap-tokens ({self.token_overlap()}) must be smaller than --max-tokens "
                f"({self.max_tokens})"
            )
        if self.turn_overlap() >= self.max_turns:
            raise SettingError(
                f"--overlap-turns ({self.turn_overlap()}) must be smaller than --max-turns "
                f"({self.max_turns})"
            )


@dataclass(kw_only=True)
class PipelineContext(ConversationContext, DistillContext):
    """Settings of generation followed by distillation."""

    def check(self) -> None:
        ConversationContext.check(self)
        DistillContext.check(self)
