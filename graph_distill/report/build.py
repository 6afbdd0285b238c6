"""One pass over a dataset: every section's figures, and each conversation handed on (to the
viewer) with what was measured on it. Measuring a conversation is pure work on its messages, so
with ``workers`` > 1 it runs in worker processes while files are read and figures added here."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing import get_context
from typing import Any

from graph_distill.report.citations import Distillation, FileCitations, file_citations
from graph_distill.report.dataset import Conversation, Dataset, Reference, no_conversations
from graph_distill.report.profile import Profile
from graph_distill.report.quality import Quality, QualityMeasure, measure_quality
from graph_distill.report.realism import RealismSide, compare_realism
from graph_distill.report.reference import UserSide, compare
from graph_distill.report.stats import words

# Conversations handed to the workers ahead of the one being added: enough to keep them busy,
# few enough that the dataset is never all in memory.
AHEAD_PER_WORKER = 8


@dataclass(frozen=True)
class Measured:
    """What was measured on one conversation."""

    lengths: dict[str, list[int]]
    quality: QualityMeasure
    citations: FileCitations | None

    @property
    def degenerate_rounds(self) -> list[bool]:
        return self.quality.flags


Sink = Callable[[Conversation, Measured], None]


@dataclass
class Analysis:
    figures: dict[str, Any]
    degenerate: set[str] = field(default_factory=set)
    near_duplicates: set[str] = field(default_factory=set)


def measure(messages: list[dict[str, str]], distilled: dict[str, Any] | None) -> Measured:
    tokens = [words(message["content"]) for message in messages]
    lengths: dict[str, list[int]] = {}
    for message, message_tokens in zip(messages, tokens, strict=True):
        lengths.setdefault(message["role"], []).append(len(message_tokens))
    citations = file_citations(tokens, distilled) if distilled is not None else None
    return Measured(lengths, measure_quality(messages, tokens), citations)


def _measured(
    conversations: Iterable[Conversation], workers: int
) -> Iterator[tuple[Conversation, Measured]]:
    """Each conversation with its measurements, in order."""
    if workers <= 1:
        for conversation in conversations:
            yield conversation, measure(conversation.messages, conversation.distilled)
        return
    # Forked workers share this process's string hashing, which distinct-2 relies on.
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        pending: deque[tuple[Conversation, Future[Measured]]] = deque()
        for conversation in conversations:
            job = pool.submit(measure, conversation.messages, conversation.distilled)
            pending.append((conversation, job))
            if len(pending) > workers * AHEAD_PER_WORKER:
                done, job = pending.popleft()
                yield done, job.result()
        while pending:
            done, job = pending.popleft()
            yield done, job.result()


def analyze(
    dataset: Dataset,
    *,
    reference: Reference | None = None,
    sink: Sink | None = None,
    workers: int = 1,
) -> Analysis:
    """Every figure of the report (without the judge), reading each conversation once."""
    profile, quality, distillation = Profile(), Quality(), Distillation()
    simulated = UserSide() if reference is not None else None
    realism = RealismSide()
    for conversation, measured in _measured(dataset, workers):
        profile.add(conversation, measured.lengths)
        quality.add(conversation.key, measured.quality)
        if measured.citations is not None:
            distillation.add(measured.citations)
        if simulated is not None:
            simulated.add(conversation.messages)
            realism.add(conversation.messages)
        if sink is not None:
            sink(conversation, measured)
    if not profile.rounds:
        raise no_conversations("-c", dataset.conversations, dataset.skipped)
    figures = {
        "generated_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "inputs": {
            "conversations": str(dataset.conversations),
            "distilled": None if dataset.distilled is None else str(dataset.distilled),
            "skipped": [*dataset.skipped, *(reference.skipped if reference else [])],
        },
        **profile.figures(dataset.run_reports()),
        **quality.figures(),
        **distillation.figures(),
    }
    if simulated is not None and reference is not None:
        figures["reference"] = compare(simulated, reference.side)
        figures["realism"] = compare_realism(realism, reference.realism)
    return Analysis(
        figures,
        degenerate=quality.degenerate_keys(),
        near_duplicates=set(figures["near_duplicates"]["duplicates"]),
    )
