"""One pass over a dataset: every section's figures, and each conversation handed on (to the
viewer) with what was measured on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from graph_distill.report.citations import Distillation, FileCitations
from graph_distill.report.dataset import Conversation, Dataset, DatasetError
from graph_distill.report.profile import Profile
from graph_distill.report.quality import Quality
from graph_distill.report.reference import UserSide, compare, reference_side
from graph_distill.report.stats import words


@dataclass(frozen=True)
class Measured:
    """What the pass measured on one conversation."""

    degenerate_rounds: list[bool]
    citations: FileCitations | None


Sink = Callable[[Conversation, Measured], None]


@dataclass
class Analysis:
    figures: dict[str, Any]
    degenerate: set[str] = field(default_factory=set)
    near_duplicates: set[str] = field(default_factory=set)


def analyze(
    dataset: Dataset,
    *,
    reference: Sequence[Sequence[dict[str, str]]] | None = None,
    sink: Sink | None = None,
) -> Analysis:
    """Every figure of the report (without the judge), reading each conversation once."""
    profile, quality, distillation = Profile(), Quality(), Distillation()
    simulated = UserSide() if reference is not None else None
    for conversation in dataset:
        tokens = [words(message["content"]) for message in conversation.messages]
        lengths: dict[str, list[int]] = {}
        for message, message_tokens in zip(conversation.messages, tokens, strict=True):
            lengths.setdefault(message["role"], []).append(len(message_tokens))
        profile.add(conversation, lengths)
        flags = quality.add(conversation.key, conversation.messages, tokens)
        citations = None
        if conversation.distilled is not None:
            citations = distillation.add(tokens, conversation.distilled)
        if simulated is not None:
            simulated.add(conversation.messages)
        if sink is not None:
            sink(conversation, Measured(flags, citations))
    if not profile.rounds:
        raise DatasetError(f"-c {dataset.conversations}: no conversations found")
    figures = {
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "inputs": {
            "conversations": str(dataset.conversations),
            "distilled": None if dataset.distilled is None else str(dataset.distilled),
            "skipped": list(dataset.skipped),
        },
        **profile.figures(dataset.run_reports()),
        **quality.figures(),
        **distillation.figures(),
    }
    if simulated is not None and reference is not None:
        figures["reference"] = compare(simulated, reference_side(reference))
    return Analysis(
        figures,
        degenerate=quality.degenerate_keys(),
        near_duplicates=set(figures["near_duplicates"]["duplicates"]),
    )
