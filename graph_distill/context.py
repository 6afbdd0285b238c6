"""Run settings of the graphs (LangGraph ``context_schema``); Studio shows them as settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def setting(default: Any, description: str, **kwargs: Any) -> Any:
    return field(default=default, metadata={"description": description}, **kwargs)


@dataclass(kw_only=True)
class ModelContext:
    """Which server and models to call. Unset fields come from MIMO_* env / ``.env``."""

    base_url: str | None = setting(None, "OpenAI-compatible base URL (default: MIMO_BASE_URL).")
    api_key: str | None = setting(None, "API key (default: MIMO_API_KEY).", repr=False)
    model: str | None = setting(None, "Model for every role unless overridden (MIMO_MODEL).")
    request_timeout: float = setting(120.0, "Seconds before one model request times out.")
    max_retries: int = setting(3, "Client retries for 429/5xx/timeouts (Retry-After honoured).")
    requests_per_minute: float | None = setting(
        None,
        "Most model requests per minute across the whole run, all roles and retries included "
        "(None: no cap).",
    )


@dataclass(kw_only=True)
class ConversationContext(ModelContext):
    """Settings of conversation generation."""

    user_model: str | None = setting(None, "Model playing the user (default: model).")
    assistant_model: str | None = setting(None, "Model playing the assistant (default: model).")
    min_rounds: int = setting(30, "Fewest rounds when the target is drawn at random.")
    max_rounds: int = setting(100, "Most rounds when the target is drawn at random.")
    typo_rate: float = setting(0.12, "Share of user messages that get typos/grammar slips.")
    user_temperature: float = setting(0.9, "Sampling temperature of the simulated user.")
    assistant_temperature: float = setting(0.7, "Sampling temperature of the assistant.")
    max_output_tokens: int = setting(1024, "Most tokens one chat reply may have.")
    history_budget_tokens: int = setting(
        24000, "Most prompt tokens of history sent per call; older turns are cut in steps."
    )
    history_cut_step: int = setting(
        16, "Messages dropped at once when history must be cut (keeps prompt prefixes cached)."
    )
    copy_threshold: float = setting(
        0.6,
        "Share of a message's word triples found in an earlier message (same side, or the "
        "other side's last message) above which it counts as a copy or an echo.",
    )
    repeat_window: int = setting(
        6,
        "Earlier rounds a message is compared with for copies (at most 16); a questionnaire "
        "restarted by the user repeats rounds from long ago without looping.",
    )
    opening_words: int = setting(
        10,
        "Words at the start of a message compared with another's opening: loops keep their "
        "first sentence and vary the tail (at most 16).",
    )
    self_repeat_threshold: float = setting(
        0.5, "Share of a message's sentences repeating an earlier one in it that flags it."
    )
    min_novelty: float = setting(
        0.4, "Share of new content words under which a round of mutual praise is empty."
    )
    stall_rounds: int = setting(
        2, "Rounds in a row that must show copies, echoes or empty praise to make a stall."
    )
    drift_window: int = setting(6, "Rounds whose words are compared with the scenario's.")
    drift_threshold: float = setting(
        0.03, "Similarity to the scenario's words under which the recent rounds have drifted."
    )
    stall_retry_rounds: int = setting(
        4,
        "A stall found within this many rounds of a topic switch means the switch did not take: "
        "the next switch adds repetition penalties and a firmer steer, the one after ends the "
        "conversation as 'stalled'.",
    )
    repetition_penalty: float = setting(
        0.8, "frequency_penalty and presence_penalty sent after a switch that did not take."
    )
    max_role_retries: int = setting(2, "Regenerations of a user message that breaks role.")


@dataclass(kw_only=True)
class DistillContext(ModelContext):
    """Settings of distillation."""

    distill_model: str | None = setting(None, "Model that writes the notes (default: model).")
    split_method: str = setting("tokens", "How to split: 'tokens' or 'turns'.")
    max_tokens: int = setting(4000, "Most tokens per chunk (tokens method).")
    overlap_tokens: int = setting(200, "Tokens of messages shared by consecutive chunks.")
    max_turns: int = setting(10, "Messages per chunk (turns method).")
    distill_temperature: float = setting(0.3, "Sampling temperature of distillation.")
    distill_max_output_tokens: int = setting(2000, "Most tokens of one notes reply.")
    notes_budget_tokens: int = setting(
        6000, "Most tokens of notes merged in one reduce call; more are collapsed in groups."
    )


@dataclass(kw_only=True)
class PipelineContext(ConversationContext, DistillContext):
    """Settings of generation followed by distillation."""
