"""Stagnation detection: is the talk looping, echoing, praising itself, drifting or ending early?

Each round is reduced once to a fingerprint (``observe``, run by the assistant step, which
keeps the last ``MEMORY_ROUNDS`` of them in state). Deciding (``stall_reason``) reads only
those fingerprints, so it costs the same at round 100 as at round 3.
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TypedDict

from graph_distill.context import ConversationContext

_WORD = re.compile(r"[a-z0-9']+")
_SENTENCE = re.compile(r"[^.!?\n]+")
_ACK_WORDS = frozenset(
    "ok okay k kk thanks thank thx ty you so much got it cool great nice sure alright "
    "right i see understood perfect awesome yes yeah yep makes sense good all that's "
    "that thats clear helpful very will do noted fine".split()
)
_GOODBYE = re.compile(
    r"\b(bye|goodbye|good bye|see you|see ya|talk (to you )?later|signing off|"
    r"have a (good|nice|great) (day|one|night)|take care(?! of)|"
    r"that'?s all (for now|for today|i needed|i wanted|thanks))\b"
)
_PRAISE = re.compile(
    r"\b(you'?re (so |absolutely |completely |totally |very |really )?(right|welcome|kind|"
    r"amazing|awesome|sweet|thoughtful|wonderful|taking it)|you'?ve (really |truly )?(got|hit|"
    r"nailed|made) (a |the )?(great|good|nail|mark|point)|hit the (nail|mark)|thank you|thanks|"
    r"i (really |truly )?appreciate|(a |such a |that'?s a |what a )(great|wonderful|lovely|"
    r"beautiful|fantastic|brilliant) (question|point|idea|job|example|approach|perspective|"
    r"way|story|insight)|i'?m (so |really |truly )?(glad|happy|grateful|thrilled|touched)|"
    r"wonderful|fantastic|amazing|couldn'?t agree more|well said|so (true|kind|sweet)|"
    r"i love (that|this|it|your|how)|exactly (what|how|the kind))\b"
)
_STOPWORDS = frozenset(
    "about above after again also always another any anything are aren't around because "
    "been before being below between both but can't cannot could couldn't did didn't does "
    "doesn't doing done down during each either else even ever every from further get gets "
    "getting give going gonna good great had hadn't has hasn't have haven't having here "
    "here's hers herself him himself his how however i'll i'm i've into isn't it's its itself "
    "just know let let's like likely look lot made make makes many maybe might more most "
    "much must myself need needs never next nice okay once only other others our ours "
    "ourselves out over own really right said same say says see should shouldn't since some "
    "something sometimes still such sure take tell than thank thanks that that's their theirs "
    "them themselves then there there's these they they'll they're thing things think this "
    "those though through too under until upon very want wants was wasn't way well were "
    "weren't what what's when where which while who whole whom why will with within without "
    "won't would wouldn't yeah yes yet you you'd you'll you're you've your yours yourself "
    "yourselves".split()
    # praise carries no content: a round made of it adds nothing new
) | frozenset(
    "absolutely amazing appreciate appreciated awesome beautiful definitely excellent exactly "
    "fantastic glad grateful happy incredible indeed kind kindly love loved lovely perfect "
    "sweet thoughtful thrilled touched truly welcome wonderful".split()
)
ACK_ROUNDS = 2
MAX_ACK_WORDS = 8
MAX_GOODBYE_WORDS = 30
MEMORY_ROUNDS = 16
SHINGLE_WORDS = 3
OPENING_WORDS = 16
STEM_LETTERS = 5
# Messages shorter than this many word triples (a number, "yes", "go on") are never copies.
MIN_COPY_SHINGLES = 4
EXACT_COPY = 0.95

REASONS = {
    "user_repeat": "the user repeated an earlier message",
    "assistant_repeat": "the assistant repeated an earlier reply",
    "echo": "the user echoed the assistant's last reply",
    "self_repeat": "a message repeated its own sentences",
    "praise_spiral": "rounds of praise and thanks with nothing new",
    "drift": "the talk drifted away from the scenario",
    "acknowledgements": f"{ACK_ROUNDS} rounds of bare acknowledgements from the user",
    "early_goodbye": "the user said goodbye before the target round count",
}
# Signals that must show in consecutive rounds before they count as a stall.
LOOP_SIGNALS = ("assistant_repeat", "user_repeat", "echo", "self_repeat", "praise_spiral")


class MessagePrint(TypedDict):
    """What detection keeps of one message (plain lists: checkpoints serialize them).
    ``opening_grams``: the hashed triples of ``opening``, in order."""

    shingles: list[int]
    opening: list[str]
    opening_grams: list[int]
    content: list[str]
    self_repeat: float
    praise: bool
    ack: bool
    goodbye: bool


class RoundPrint(TypedDict):
    """One round's fingerprints and the loop signals found when it was observed."""

    round: int
    user: MessagePrint
    assistant: MessagePrint
    signals: list[str]


def keep_recent(old: list[RoundPrint] | None, new: list[RoundPrint] | None) -> list[RoundPrint]:
    """State reducer: the last ``MEMORY_ROUNDS`` round prints (a bounded copy per round)."""
    return [*(old or []), *(new or [])][-MEMORY_ROUNDS:]


def _normal(text: str) -> str:
    return text.lower().replace("\u2019", "'")


def _words(text: str) -> list[str]:
    return _WORD.findall(_normal(text))


def _gram_hashes(words: Sequence[str]) -> list[int]:
    """The crc32 of each word triple as text (of all the words when fewer), in order: each a
    slice of the words joined once (they are ASCII, so characters are bytes)."""
    if not words:
        return []
    size = min(SHINGLE_WORDS, len(words))
    joined = memoryview(" ".join(words).encode())
    starts = list(itertools.accumulate((len(word) + 1 for word in words), initial=0))
    crc32 = zlib.crc32
    return [crc32(joined[starts[i] : starts[i + size] - 1]) for i in range(len(starts) - size)]


def _shingles(words: Sequence[str]) -> set[int]:
    return set(_gram_hashes(words)) if words else set()


def shingle_set(text: str) -> set[int]:
    """The hashed word triples of ``text`` (what copy detection compares)."""
    return _shingles(_words(text))


def _stems(words: Iterable[str]) -> set[str]:
    return {
        w[:STEM_LETTERS] for w in words if len(w) > 3 and w not in _STOPWORDS and not w.isdigit()
    }


def stems(text: str) -> set[str]:
    """Content-word stems: stop words dropped, words cut to a few letters (cheap, offline)."""
    return _stems(_words(text))


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of word-pair sets: survives a few typos."""
    sa, sb = _pairs(a), _pairs(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / len(sa | sb)


@lru_cache(maxsize=4096)
def _pairs(text: str) -> frozenset[tuple[str, ...]]:
    words = _words(text)
    size = min(2, len(words))
    return frozenset(tuple(words[i : i + size]) for i in range(len(words) - size + 1))


def self_repeat(text: str) -> float:
    """Share of a message's sentences (of 4+ words) that mostly copy an earlier one in it."""
    sentences = [_WORD.findall(s) for s in _SENTENCE.findall(_normal(text))]
    return _self_repeat(sentences, _gram_hashes([w for s in sentences for w in s]))


def _self_repeat(sentences: Sequence[Sequence[str]], hashes: Sequence[int]) -> float:
    """``self_repeat`` from the text's sentences and the gram hashes of all its words (a
    sentence's triples are a run of those)."""
    seen: list[set[int]] = []
    repeated, start = 0, 0
    for words in sentences:
        start += len(words)
        if len(words) < 4:
            continue
        grams = set(hashes[start - len(words) : start - SHINGLE_WORDS + 1])
        if any(len(grams & earlier) >= 0.6 * len(grams) for earlier in seen):
            repeated += 1
        seen.append(grams)
    return repeated / len(seen) if len(seen) >= 3 else 0.0


def is_acknowledgement(text: str) -> bool:
    return _is_acknowledgement(_words(text))


def _is_acknowledgement(words: Sequence[str]) -> bool:
    return 0 < len(words) <= MAX_ACK_WORDS and all(w in _ACK_WORDS for w in words)


def is_goodbye(text: str) -> bool:
    normal = _normal(text)
    return _is_goodbye(normal, _WORD.findall(normal))


def _is_goodbye(normal: str, words: Sequence[str]) -> bool:
    return len(words) <= MAX_GOODBYE_WORDS and bool(_GOODBYE.search(normal))


def fingerprint(text: str) -> MessagePrint:
    """What detection keeps of a message, from one pass over its text (words never cross a
    sentence boundary, so the text's words are its sentences' words in order)."""
    normal = _normal(text)
    sentences = [_WORD.findall(sentence) for sentence in _SENTENCE.findall(normal)]
    words = [word for sentence in sentences for word in sentence]
    hashes = _gram_hashes(words)
    return MessagePrint(
        shingles=sorted(set(hashes)),
        opening=words[:OPENING_WORDS],
        opening_grams=hashes[: OPENING_WORDS - SHINGLE_WORDS + 1],
        content=sorted(_stems(words)),
        self_repeat=_self_repeat(sentences, hashes),
        praise=bool(_PRAISE.search(normal)),
        ack=_is_acknowledgement(words),
        goodbye=_is_goodbye(normal, words),
    )


def opening_overlap(new: MessagePrint, old: MessagePrint, words: int) -> float:
    """Share of the word triples in ``new``'s first ``words`` words found in ``old``'s opening
    (a little longer, so one inserted word does not hide a copied first sentence)."""
    grams = _opening_grams(new, words)
    if len(new["opening"]) < words or not grams:
        return 0.0
    return len(grams & _opening_grams(old, OPENING_WORDS)) / len(grams)


def _opening_grams(message: MessagePrint, words: int) -> set[int]:
    """The hashed word triples of the message's first ``words`` words (kept in its print: a
    message's triples start with those of its opening)."""
    opening = message["opening"][:words]
    if len(opening) < SHINGLE_WORDS:
        return _shingles(opening)
    return set(message["opening_grams"][: len(opening) - SHINGLE_WORDS + 1])


def containment(new: MessagePrint, old: MessagePrint) -> float:
    """Share of ``new``'s word triples that ``old`` has too."""
    grams = new["shingles"]
    return len(set(grams).intersection(old["shingles"])) / len(grams) if grams else 0.0


def near_copy(new: MessagePrint, old: MessagePrint, limits: ConversationContext) -> bool:
    """Whether ``new`` mostly copies ``old``: by containment of its word triples, or by a long
    shared opening (loops keep their first sentence and vary the tail)."""
    if len(new["shingles"]) < MIN_COPY_SHINGLES:
        return False
    return (
        containment(new, old) >= limits.copy_threshold
        or opening_overlap(new, old, limits.opening_words) >= limits.copy_threshold
    )


def _exact_copy(new: MessagePrint, earlier: Iterable[MessagePrint]) -> bool:
    if len(new["shingles"]) < MIN_COPY_SHINGLES:
        return False
    return any(containment(new, old) >= EXACT_COPY for old in earlier)


def _novelty(round_print: RoundPrint, earlier: Sequence[RoundPrint]) -> float:
    words = {*round_print["user"]["content"], *round_print["assistant"]["content"]}
    if not words:
        return 0.0
    seen = set().union(*(r[side]["content"] for r in earlier for side in ("user", "assistant")))
    return len(words - seen) / len(words)


def _signals(
    current: RoundPrint, earlier: Sequence[RoundPrint], limits: ConversationContext
) -> list[str]:
    """The loop signals a round shows. Near-copies of earlier messages count only when both
    sides make them in a round that brings little new, or the copy is exact: quizzes,
    questionnaires and editing sessions reuse phrasing round after round and still move on."""
    user, assistant = current["user"], current["assistant"]
    recent = earlier[-limits.repeat_window :] if limits.repeat_window > 0 else []
    users = [r["user"] for r in recent]
    replies = [r["assistant"] for r in recent]
    stale = _novelty(current, earlier) < limits.min_novelty
    mutual = (
        stale
        and any(near_copy(user, old, limits) for old in users)
        and any(near_copy(assistant, old, limits) for old in replies)
    )
    found = []
    if mutual or _exact_copy(assistant, replies):
        found.append("assistant_repeat")
    if mutual or _exact_copy(user, users):
        found.append("user_repeat")
    # The user parroting the last reply, or a reply made of the user's words that also opens
    # like the user's message (restating the question, or quoting a quiz option, is normal).
    user_echoes = bool(replies) and near_copy(user, replies[-1], limits)
    parrots = min(
        containment(assistant, user), opening_overlap(assistant, user, limits.opening_words)
    )
    if user_echoes or parrots >= limits.copy_threshold:
        found.append("echo")
    if max(user["self_repeat"], assistant["self_repeat"]) >= limits.self_repeat_threshold:
        found.append("self_repeat")
    if stale and (user["praise"] or user["ack"]) and assistant["praise"]:
        found.append("praise_spiral")
    return found


def observe(
    rounds: int,
    user_text: str,
    assistant_text: str,
    earlier: Sequence[RoundPrint],
    limits: ConversationContext,
) -> RoundPrint:
    """The fingerprint of a finished round, with the loop signals it shows against ``earlier``
    (the remembered rounds before it)."""
    current = RoundPrint(
        round=rounds,
        user=fingerprint(user_text),
        assistant=fingerprint(assistant_text),
        signals=[],
    )
    current["signals"] = _signals(current, earlier[-MEMORY_ROUNDS:], limits)
    return current


def _cosine(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / math.sqrt(len(a) * len(b))


def drift_score(window: Iterable[RoundPrint], topic_words: Iterable[str]) -> float:
    """Similarity of the recent rounds' words to the scenario's (cosine of stem sets)."""
    words = {w for r in window for side in ("user", "assistant") for w in r[side]["content"]}
    return _cosine(words, set(topic_words))


def stall_reason(
    prints: Sequence[RoundPrint],
    topic_words: Sequence[str],
    since_switch: int,
    limits: ConversationContext,
) -> str | None:
    """The reason key (see ``REASONS``) when the latest rounds show a stall, else None.

    Only rounds after the latest topic switch count, so a switch gets its chance."""
    if not prints:
        return None
    fresh = prints[-min(since_switch, len(prints)) :] if since_switch > 0 else []
    last = prints[-1]
    acks = fresh[-ACK_ROUNDS:]
    if len(acks) == ACK_ROUNDS and all(r["user"]["ack"] for r in acks):
        return "acknowledgements"
    if last["user"]["goodbye"]:
        return "early_goodbye"
    streak = fresh[-limits.stall_rounds :]
    if len(streak) == limits.stall_rounds and all(r["signals"] for r in streak):
        return next(s for s in LOOP_SIGNALS if s in last["signals"])
    window = fresh[-limits.drift_window :]
    full = len(window) == limits.drift_window and bool(topic_words)
    if full and drift_score(window, topic_words) < limits.drift_threshold:
        return "drift"
    return None
