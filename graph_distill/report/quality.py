"""Generation quality: rounds that repeat earlier ones (degeneration), distinct word pairs
across the dataset (distinct-2), and conversations that nearly repeat another (MinHash)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, pairwise
from typing import Any

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from graph_distill.conversation.stagnation import similarity
from graph_distill.report.stats import distribution, histogram, share

# A message "mostly repeats" an earlier one of its speaker at this word-pair similarity (the
# stall detector's ``similarity``; the detector itself also weighs openings and novelty).
REPEAT_SIMILARITY = 0.7
# Candidates for that check are found on word pairs with a lower bar, so that a pair the
# detector's own tokenisation would call a repeat is not missed.
CANDIDATE_SIMILARITY = REPEAT_SIMILARITY - 0.2
# A conversation with this share of repeating rounds is degenerate (--drop-degenerate).
DEGENERATE_SHARE = 0.25
NEAR_DUPLICATE_JACCARD = 0.8
NUM_PERM = 128
SHINGLE_WORDS = 5
# MinHash sees one shingle in SHINGLE_SAMPLE (chosen by hash value, so the same shingles in
# every conversation); short conversations keep all of theirs.
SHINGLE_SAMPLE = 4
MIN_SAMPLED_SHINGLES = 200
_MASK32 = 0xFFFFFFFF
# Word pairs of this many conversations are merged into their distinct values, so that
# distinct-2 holds the dataset's distinct pairs, not every pair it has.
COMPACT_EVERY = 256


def pair_hashes(tokens: Sequence[str]) -> list[int]:
    """Hashes of the consecutive word pairs of ``tokens``."""
    return list(map(hash, pairwise(tokens)))


def distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted (``np.unique`` without its slower hash path)."""
    ordered = np.sort(values)
    if len(ordered) == 0:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def degenerate_rounds(
    messages: Sequence[dict[str, str]], pairs: Sequence[Sequence[int]]
) -> list[bool]:
    """For each round, whether its user message or its reply mostly repeats an earlier message
    of the same speaker (mutual-praise loops and copy loops of small models).

    ``pairs`` are each message's word-pair hashes (a one-word message: its word's). Checking
    every message against every earlier one with the detector's ``similarity`` costs too much
    on long conversations: word-pair overlaps, counted at once with a matrix product, pick the
    candidates, and only those are checked."""
    repeats = [False] * len(messages)
    for role in {message["role"] for message in messages}:
        turns = [t for t, message in enumerate(messages) if message["role"] == role]
        for turn in _repeating(turns, messages, pairs):
            repeats[turn] = True
    rounds: list[bool] = []
    pending = False
    for turn, message in enumerate(messages):
        pending = pending or repeats[turn]
        if message["role"] == "assistant":
            rounds.append(pending)
            pending = False
    return rounds


def _repeating(
    turns: list[int], messages: Sequence[dict[str, str]], pairs: Sequence[Sequence[int]]
) -> list[int]:
    lengths = np.array([len(pairs[t]) for t in turns], dtype=np.int64)
    if not lengths.any():
        return []
    every = np.fromiter(chain.from_iterable(pairs[t] for t in turns), dtype=np.int64)
    _, columns = np.unique(every, return_inverse=True)
    incidence = np.zeros((len(turns), int(columns.max()) + 1), dtype=np.float32)
    incidence[np.repeat(np.arange(len(turns)), lengths), columns] = 1.0
    sizes = incidence.sum(axis=1)
    shared = incidence @ incidence.T
    union = sizes[:, None] + sizes[None, :] - shared
    jaccard = np.divide(shared, union, out=np.zeros_like(shared), where=union > 0)
    found = []
    for i, j in zip(*np.nonzero(np.tril(jaccard >= CANDIDATE_SIMILARITY, k=-1)), strict=True):
        if turns[i] in found:
            continue
        text, earlier = messages[turns[i]]["content"], messages[turns[j]]["content"]
        if similarity(text, earlier) >= REPEAT_SIMILARITY:
            found.append(turns[i])
    return found


@dataclass
class _WordIds:
    """Stable 32-bit ids of words (the same in every run, unlike ``hash``)."""

    ids: dict[str, int] = field(default_factory=dict)

    def of(self, tokens: Sequence[str]) -> np.ndarray:
        ids = self.ids
        for word in set(tokens).difference(ids):
            ids[word] = zlib.crc32(word.encode())
        return np.fromiter(map(ids.__getitem__, tokens), dtype=np.uint64, count=len(tokens))


_WORD_IDS = _WordIds()


@dataclass(frozen=True)
class QualityMeasure:
    """What one conversation contributes: its rounds' degeneration flags, its distinct word-pair
    hashes and pair count by role, and its MinHash signature."""

    flags: list[bool]
    role_pairs: dict[str, np.ndarray]
    role_totals: dict[str, int]
    signature: LeanMinHash


def measure_quality(
    messages: Sequence[dict[str, str]], tokens: Sequence[list[str]]
) -> QualityMeasure:
    pairs = [pair_hashes(message_tokens) for message_tokens in tokens]
    features = [p if len(t) > 1 else [hash(tuple(t))] for p, t in zip(pairs, tokens, strict=True)]
    by_role: dict[str, list[int]] = {}
    for message, message_pairs in zip(messages, pairs, strict=True):
        by_role.setdefault(message["role"], []).extend(message_pairs)
    return QualityMeasure(
        flags=degenerate_rounds(messages, features),
        role_pairs={
            role: distinct(np.array(role_pairs, dtype=np.int64))
            for role, role_pairs in by_role.items()
        },
        role_totals={role: len(role_pairs) for role, role_pairs in by_role.items()},
        signature=signature([t for message_tokens in tokens for t in message_tokens]),
    )


def signature(tokens: Sequence[str]) -> LeanMinHash:
    """MinHash of the word 5-grams of ``tokens`` (a sample of them on long conversations)."""
    ids = _WORD_IDS.of(tokens)
    minhash = MinHash(num_perm=NUM_PERM, hashfunc=int)
    if len(ids) >= SHINGLE_WORDS:
        shingles = np.zeros(len(ids) - SHINGLE_WORDS + 1, dtype=np.uint64)
        for offset in range(SHINGLE_WORDS):
            window = ids[offset : len(ids) - SHINGLE_WORDS + 1 + offset]
            shingles = (shingles * np.uint64(1_000_003) + window) & np.uint64(_MASK32)
        shingles = distinct(shingles)
        sampled = shingles[shingles % SHINGLE_SAMPLE == 0]
        minhash.update_batch(
            (sampled if len(sampled) >= MIN_SAMPLED_SHINGLES else shingles).tolist()
        )
    return LeanMinHash(minhash)


@dataclass
class Quality:
    """Gathered one conversation at a time (``add``); ``figures`` at the end."""

    rounds: int = 0
    degenerate: int = 0
    flagged: list[tuple[str, float]] = field(default_factory=list)
    shares: list[float] = field(default_factory=list)
    pairs: dict[str, list[np.ndarray]] = field(default_factory=dict)
    pair_totals: dict[str, int] = field(default_factory=dict)
    signatures: list[tuple[int, LeanMinHash]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def add(self, key: str, measure: QualityMeasure) -> None:
        flags = measure.flags
        self.rounds += len(flags)
        self.degenerate += sum(flags)
        degenerate_share = sum(flags) / len(flags) if flags else 0.0
        if degenerate_share >= DEGENERATE_SHARE:
            self.flagged.append((key, round(degenerate_share, 4)))
        self.shares.append(degenerate_share)
        for role, role_pairs in measure.role_pairs.items():
            held = self.pairs.setdefault(role, [])
            held.append(role_pairs)
            if len(held) >= COMPACT_EVERY:
                self.pairs[role] = [distinct(np.concatenate(held))]
            self.pair_totals[role] = self.pair_totals.get(role, 0) + measure.role_totals[role]
        self.signatures.append((len(self.keys), measure.signature))
        self.keys.append(key)

    def figures(self) -> dict[str, Any]:
        return {
            "degeneration": {
                "similarity": REPEAT_SIMILARITY,
                "rounds": self.rounds,
                "degenerate_rounds": self.degenerate,
                "share": share(self.degenerate, self.rounds),
                "conversation_share_threshold": DEGENERATE_SHARE,
                "degenerate_conversations": len(self.flagged),
                "per_conversation": {
                    **distribution(self.shares),
                    "histogram": histogram(self.shares, bins=10),
                },
                "worst": [
                    {"key": key, "share": value}
                    for key, value in sorted(self.flagged, key=lambda kv: -kv[1])[:20]
                ],
            },
            "distinct_2": self._distinct_2(),
            "near_duplicates": near_duplicates(self.signatures, self.keys),
        }

    def degenerate_keys(self) -> set[str]:
        return {key for key, _ in self.flagged}

    def _distinct_2(self) -> dict[str, float | None]:
        figures: dict[str, float | None] = {
            role: share(len(distinct(np.concatenate(arrays))), self.pair_totals[role])
            for role, arrays in sorted(self.pairs.items())
        }
        every = [array for arrays in self.pairs.values() for array in arrays]
        total = sum(self.pair_totals.values())
        figures["all"] = share(len(distinct(np.concatenate(every))), total) if every else None
        return figures


def near_duplicates(
    signatures: Sequence[tuple[int, LeanMinHash]], keys: Sequence[str]
) -> dict[str, Any]:
    """Pairs of conversations whose word 5-gram sets have an estimated Jaccard similarity of at
    least ``NEAR_DUPLICATE_JACCARD``; ``duplicates`` are the later ones of each pair."""
    lsh = MinHashLSH(threshold=NEAR_DUPLICATE_JACCARD, num_perm=NUM_PERM)
    by_number = dict(signatures)
    pairs: list[dict[str, Any]] = []
    for number, signature in signatures:
        for earlier in sorted(lsh.query(signature)):
            jaccard = float(by_number[earlier].jaccard(signature))
            if jaccard >= NEAR_DUPLICATE_JACCARD:
                pairs.append({"a": keys[earlier], "b": keys[number], "jaccard": round(jaccard, 3)})
        lsh.insert(number, signature)
    duplicates = sorted({pair["b"] for pair in pairs})
    return {
        "jaccard": NEAR_DUPLICATE_JACCARD,
        "shingle_words": SHINGLE_WORDS,
        "num_perm": NUM_PERM,
        "pairs": pairs,
        "duplicates": duplicates,
        "share": share(len(duplicates), len(signatures)),
    }
