"""Run-level settings: what a run does with the graphs (how many, where, how fast, at what
price). No graph sees them; the graphs' own settings are the Context fields of
``graph_distill.context``. Declared the same way, so the CLI, the validation, the run report
and the resume check derive from one declaration."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from graph_distill.context import (
    DistillContext,
    SettingError,
    check_bounds,
    declared,
    flag_of,
    recorded,
    setting,
)


@dataclass(kw_only=True)
class RunSettings:
    """Settings every command that calls a model shares."""

    concurrency: int = setting(
        4,
        "Items worked on at once (conversations, files, chunks).",
        flag="-j/--concurrency",
        minimum=1,
    )
    price_input: float | None = setting(
        None,
        "USD per 1M uncached input tokens, for the cost estimate (default: mimo-v2-flash's "
        "0.1 on MiMo, 0 on the embedded model).",
        flag="--price-input",
        minimum=0,
    )
    price_cached: float | None = setting(
        None, "USD per 1M cached input tokens (default 0.01).", flag="--price-cached", minimum=0
    )
    price_output: float | None = setting(
        None, "USD per 1M output tokens (default 0.3).", flag="--price-output", minimum=0
    )
    local_model: Path | None = setting(
        None,
        "Serve this GGUF file locally instead of calling a remote server.",
        flag="--local-model",
    )
    quiet: bool = setting(False, "No live text or progress; errors only.", flag="-q/--quiet")
    server: str | None = setting(
        None,
        "Do the work as background runs on this LangGraph Agent Server; the model key and "
        "settings live on the server.",
        flag="--server",
        env="GRAPH_DISTILL_SERVER",
        resume=True,
    )
    server_api_key: str | None = setting(
        None,
        "API key of the Agent Server, for deployments that need one. Never printed or saved.",
        flag="--server-api-key",
        env="GRAPH_DISTILL_SERVER_API_KEY",
        secret=True,
    )

    server_stall_timeout: float | None = setting(
        None,
        "With --server: a run showing no new checkpoint for this many seconds is reported by "
        "its thread id, cancelled and re-submitted from its last checkpoint; a second stall "
        "fails the conversation (--resume retries it). Default: 6 times the engine's heartbeat "
        "LG_BG_JOB_HEARTBEAT as set in this environment (120 s unless set), at least 10 s.",
        flag="--server-stall-timeout",
        above=0,
    )

    def check(self) -> None:
        check_bounds(self)
        if self.server_stall_timeout is not None and not self.server:
            raise SettingError("--server-stall-timeout works with --server only")
        if self.server and getattr(self, "replace_stalled", False):
            raise SettingError("--replace-stalled works on local runs only, not with --server")
        if self.server and not self.server.startswith(("http://", "https://")):
            raise SettingError(f"--server {self.server}: give the server's http:// or https:// URL")


@dataclass(kw_only=True)
class GenerationSettings(RunSettings):
    """Settings of ``run``."""

    num_conversations: int = setting(
        100,
        "How many conversations to generate.",
        flag="-n/--num-conversations",
        minimum=1,
        resume=True,
    )
    conversation_dir: Path = setting(
        Path("conversations"), "Where conversations go.", flag="-c/--conversation-dir"
    )
    distilled_dir: Path = setting(
        Path("distilled"), "Where distilled files go.", flag="-d/--distilled-dir", resume=True
    )
    scenario: tuple[str, ...] = setting(
        (), "Only this scenario (key or name; repeatable). Default: all.", flag="--scenario"
    )
    scenarios_file: Path | None = setting(
        None, "JSON or YAML file with more scenarios.", flag="--scenarios-file"
    )
    seed: int | None = setting(
        None,
        "Makes scenario choice, round targets and noise reproducible. Default: random (printed).",
        flag="--seed",
        resume=True,
    )
    no_distill: bool = setting(
        False, "Only generate; do not distill.", flag="--no-distill", resume=True
    )
    replace_stalled: bool = setting(
        False,
        "Generate a replacement for each conversation that ended stalled (it is still "
        "saved), so that -n counts the others; at most -n replacements.",
        flag="--replace-stalled",
        resume=True,
    )
    resume: bool = setting(
        False,
        "Finish the latest unfinished run in -c: give the same options (--seed may be "
        "left out). Saved files are kept, unfinished conversations go on from their last round, "
        "and -n stays the total.",
        flag="--resume",
    )
    budget_tokens: int | None = setting(
        None,
        "Start no new conversation once this many tokens (input + output, generation and "
        "distillation) have been spent; running ones finish. Default: no budget.",
        flag="--budget-tokens",
        minimum=1,
    )


@dataclass(kw_only=True)
class DatasetSettings(RunSettings):
    """Settings of ``distill``."""

    role_map: tuple[str, ...] = setting(
        (),
        "Read speaker FROM as TO (user, assistant, system or tool), as FROM=TO; repeatable.",
        flag="--role-map",
    )
    id_field: str | None = setting(
        None,
        "The record key holding its id (default: id, then conversation_id).",
        flag="--id-field",
    )
    force: bool = setting(
        False, "Redo records already distilled (a .jsonl output is rewritten).", flag="--force"
    )


def resume_settings(context: Any, run: GenerationSettings, **derived: Any) -> dict[str, Any]:
    """What a resumed run must share with the run it finishes: every setting declared with
    ``resume=True`` (distillation's only when the run distills), plus ``derived`` values (such
    as the scenarios' keys and texts) named by their flag."""
    distill_only = {item.name for item in fields(DistillContext)}
    values: dict[str, Any] = {}
    for source in (context, run):
        shown = recorded(source)
        for item in declared(source):
            if not item.metadata.get("resume"):
                continue
            if run.no_distill and (item.name in distill_only or item.name == "distilled_dir"):
                continue
            value = shown[item.name]
            if item.name == "distilled_dir":
                value = str(Path(value).absolute())
            values[flag_of(item)] = value
    return values | derived


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per setting that differs, naming the flag that sets it."""
    return [
        f"{name}: was {_shown(stored.get(name))}, now {_shown(current.get(name))}"
        for name in sorted(set(stored) | set(current))
        if stored.get(name) != current.get(name)
    ]


def _shown(value: Any) -> str:
    if value is None:
        return "not set"
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
