"""Stagnation detection: quality on the labelled transcripts, and time per round.

Quality: every transcript in tests/fixtures/transcripts is replayed turn by turn through the
real conversation graph (fake server serving the recorded replies). Recall is the share of
degenerate transcripts whose loop is caught (a topic switch or a stalled ending) within two
rounds of the hand-marked start; false switches are topic switches on healthy transcripts,
per 100 rounds. Baseline, in the same run: the previous rule (word-pair Jaccard >= 0.7 of a
whole message against every earlier one of the same side, two bare acknowledgements, an early
goodbye), applied round by round to the same transcripts.

Time: the detector's work for one round (fingerprinting the round, then deciding) at round
10, 100 and 400 of a long conversation, against the previous rule, which re-read the whole
history every round.

    python bench/bench_stagnation.py
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graph_distill.context import ConversationContext
from graph_distill.conversation.stagnation import (
    RoundPrint,
    is_acknowledgement,
    is_goodbye,
    keep_recent,
    observe,
    similarity,
    stall_reason,
    stems,
)
from tests.support.replay import Transcript, load_transcripts, replay

CATCH_WITHIN_ROUNDS = 2
BASELINE_THRESHOLD = 0.7
TIMED_ROUNDS = (10, 100, 400)
REPEATS = 200


def baseline_flags(users: Sequence[str], assistants: Sequence[str]) -> list[int]:
    """Rounds (1-based) the previous rule would have switched after."""
    flagged = []
    for end in range(1, len(users) + 1):
        u, a = users[:end], assistants[:end]
        acks = len(u) >= 2 and all(is_acknowledgement(t) for t in u[-2:])
        if acks or is_goodbye(u[-1]) or _repeats(u) or _repeats(a):
            flagged.append(end)
    return flagged


def _repeats(texts: Sequence[str]) -> bool:
    return any(similarity(texts[-1], t) >= BASELINE_THRESHOLD for t in texts[:-1])


def _caught(transcript: Transcript, rounds: Sequence[int]) -> bool:
    start = transcript.loop_start or 0
    return any(start <= r <= start + CATCH_WITHIN_ROUNDS for r in rounds)


async def quality() -> None:
    degenerate, healthy = load_transcripts("degenerate"), load_transcripts("healthy")
    caught = base_caught = switches = base_switches = 0
    for t in degenerate:
        result = await replay(t)
        ends = [*result.switch_rounds(), result.record["total_rounds"]]
        caught += _caught(t, ends)
        base_caught += _caught(t, baseline_flags(t.users, t.assistants))
        print(
            f"  {t.name}: loop from round {t.loop_start}; switches after rounds "
            f"{result.switch_rounds()}, ended {result.record['metadata']['termination_reason']} "
            f"at round {result.record['total_rounds']} of {t.rounds}; "
            f"previous rule: {baseline_flags(t.users, t.assistants)}"
        )
    healthy_rounds = sum(t.rounds for t in healthy)
    styled = 0
    for t in healthy:
        result = await replay(t)
        switches += len(result.switch_rounds())
        base_switches += len(baseline_flags(t.users, t.assistants))
        # The same users with every persona and the style channel at its full rate, typos too.
        styled += len(
            (await replay(t, style_rate=1.0, persona=None, typo_rate=0.12)).switch_rounds()
        )
    print(f"recall (caught within {CATCH_WITHIN_ROUNDS} rounds of the loop's start):")
    print(f"  detector {caught}/{len(degenerate)}, previous rule {base_caught}/{len(degenerate)}")
    print(
        f"false switches per 100 healthy rounds ({len(healthy)} transcripts, {healthy_rounds} "
        "rounds; for the previous rule, rounds it would switch after):"
    )
    per_100 = 100 / healthy_rounds
    print(
        f"  detector {switches * per_100:.1f} ({switches}), "
        f"previous rule {base_switches * per_100:.1f} ({base_switches}); with personas, the "
        f"style channel and typos: {styled * per_100:.1f} ({styled})"
    )


def _long_conversation(rounds: int) -> tuple[list[str], list[str]]:
    healthy = load_transcripts("healthy")
    users = [u for t in healthy for u in t.users]
    replies = [a for t in healthy for a in t.assistants]
    while len(users) < rounds:
        users, replies = users * 2, replies * 2
    return users[:rounds], replies[:rounds]


def _time(step: Callable[[], object]) -> float:
    started = time.perf_counter()
    for _ in range(REPEATS):
        step()
    return (time.perf_counter() - started) / REPEATS


def detector_time() -> None:
    """The same probe round judged after histories of growing length."""
    ctx = ConversationContext()
    users, replies = _long_conversation(max(TIMED_ROUNDS))
    probe_user, probe_reply = users[-1], replies[-1]
    topic = sorted(stems(users[0]))
    prints: list[RoundPrint] = []
    timings: dict[int, tuple[float, float]] = {}
    for k in range(1, max(TIMED_ROUNDS) + 1):
        if k in TIMED_ROUNDS:
            earlier, past_users, past_replies = prints, users[: k - 1], replies[: k - 1]

            def ours(k: int = k, earlier: list[RoundPrint] = earlier) -> object:
                seen = observe(k, probe_user, probe_reply, earlier, ctx)
                return stall_reason(keep_recent(earlier, [seen]), topic, k, ctx)

            def previous(u: list[str] = past_users, a: list[str] = past_replies) -> object:
                return _repeats([*u, probe_user]) or _repeats([*a, probe_reply])

            timings[k] = (_time(ours), _time(previous))
        prints = keep_recent(prints, [observe(k, users[k - 1], replies[k - 1], prints, ctx)])
    first = min(TIMED_ROUNDS)
    print("detector time for one round (fingerprint it + decide), milliseconds:")
    for k, (ours_s, previous_s) in timings.items():
        print(
            f"  round {k:>3}: detector {ours_s * 1e3:.3f} "
            f"(x{ours_s / timings[first][0]:.2f} of round {first}), previous rule "
            f"{previous_s * 1e3:.3f} (x{previous_s / timings[first][1]:.2f})"
        )


if __name__ == "__main__":
    asyncio.run(quality())
    detector_time()
