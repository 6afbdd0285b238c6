"""How human the simulated user reads: its messages beside real users' (a reference dataset),
with the same measures on both sides."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from graph_distill.report.stats import distribution, histogram, share, words

MIN_TYPO_LETTERS = 3
TOP_WORDS = 2000


@dataclass
class UserSide:
    """One side's user messages (words per message, questions, vocabulary) and the assistant
    words that tell known words from likely typos."""

    lengths: list[int] = field(default_factory=list)
    questions: int = 0
    vocabulary: Counter[str] = field(default_factory=Counter)
    assistant_words: set[str] = field(default_factory=set)
    candidates: list[frozenset[str]] = field(default_factory=list)

    def add(self, messages: Iterable[dict[str, str]]) -> None:
        for message in messages:
            tokens = words(message["content"])
            if message["role"] == "assistant":
                self.assistant_words.update(tokens)
                continue
            if message["role"] != "user":
                continue
            self.lengths.append(len(tokens))
            self.questions += "?" in message["content"]
            self.vocabulary.update(tokens)
            self.candidates.append(frozenset(t for t in tokens if _typo_candidate(t)))

    def figures(self, known: set[str]) -> dict[str, Any]:
        messages = len(self.lengths)
        return {
            "user_messages": messages,
            "words": {**distribution(self.lengths), "histogram": histogram(self.lengths)},
            "question_share": share(self.questions, messages),
            "likely_typo_share": share(sum(bool(c - known) for c in self.candidates), messages),
            "vocabulary": len(self.vocabulary),
        }


def compare(simulated: UserSide, real: UserSide) -> dict[str, Any]:
    """Both sides' figures, and how much of the simulated users' vocabulary real users use."""
    # A word either side's assistant or users write more than once is a known word; a user
    # word outside them is a likely typo. The same rule judges both sides.
    known = simulated.assistant_words | real.assistant_words
    known |= {w for side in (simulated, real) for w, n in side.vocabulary.items() if n > 1}
    sim_top = _top(simulated.vocabulary)
    real_top = _top(real.vocabulary)
    used_by_real = sum(n for w, n in simulated.vocabulary.items() if w in real.vocabulary)
    return {
        "simulated": simulated.figures(known),
        "real": real.figures(known),
        "vocabulary_overlap": {
            "top_words": TOP_WORDS,
            "jaccard_of_top_words": share(len(sim_top & real_top), len(sim_top | real_top)),
            "simulated_words_in_real_vocabulary": share(
                used_by_real, sum(simulated.vocabulary.values())
            ),
        },
    }


def _typo_candidate(word: str) -> bool:
    return len(word) >= MIN_TYPO_LETTERS and word.isalpha()


def _top(vocabulary: Counter[str]) -> set[str]:
    return {word for word, _ in vocabulary.most_common(TOP_WORDS)}
