"""Recorded conversations replayed turn by turn through the real graph: loops a small model
fell into are caught, real people's conversations are left alone."""

from __future__ import annotations

import math

import pytest

from tests.support.replay import Transcript, load_transcripts, replay

DEGENERATE = load_transcripts("degenerate")
HEALTHY = load_transcripts("healthy")
CATCH_WITHIN_ROUNDS = 2
ROUNDS_PER_ALLOWED_SWITCH = 20


def test_there_are_fixtures_of_both_kinds() -> None:
    assert len(DEGENERATE) >= 2 and len(HEALTHY) >= 10
    assert all(t.loop_start for t in DEGENERATE)
    assert sum(t.rounds for t in HEALTHY) >= 200


@pytest.mark.parametrize("transcript", DEGENERATE, ids=lambda t: t.name)
async def test_a_loop_is_caught_within_two_rounds_of_its_start(transcript: Transcript) -> None:
    result = await replay(transcript)
    assert transcript.loop_start is not None
    caught = [*result.switch_rounds(), result.record["total_rounds"]]
    deadline = transcript.loop_start + CATCH_WITHIN_ROUNDS
    assert any(transcript.loop_start <= r <= deadline for r in caught), caught


@pytest.mark.parametrize("transcript", DEGENERATE, ids=lambda t: t.name)
async def test_a_loop_that_goes_on_ends_the_conversation_as_stalled(
    transcript: Transcript,
) -> None:
    # a replay cannot obey the steer: the recorded loop goes on, so escalation runs its course
    result = await replay(transcript)
    meta = result.record["metadata"]
    assert meta["termination_reason"] == "stalled"
    assert [s["escalation"] for s in meta["topic_switches"]][-2:] == [1, 2]
    assert result.events[-1]["kind"] == "stalled"
    assert result.record["conversation"][-1]["role"] == "assistant"


@pytest.mark.parametrize("transcript", HEALTHY, ids=lambda t: t.name)
async def test_a_healthy_conversation_gets_at_most_one_switch_per_20_rounds(
    transcript: Transcript,
) -> None:
    result = await replay(transcript)
    meta = result.record["metadata"]
    assert meta["termination_reason"] == "target_rounds"
    assert result.record["total_rounds"] == transcript.rounds
    allowed = math.ceil(transcript.rounds / ROUNDS_PER_ALLOWED_SWITCH)
    assert len(meta["topic_switches"]) <= allowed, meta["topic_switches"]


async def test_replays_serve_the_recorded_messages() -> None:
    transcript = HEALTHY[0]
    result = await replay(transcript)
    users = [m["content"] for m in result.record["conversation"][0::2]]
    replies = [m["content"] for m in result.record["conversation"][1::2]]
    switched = {s["turn"] // 2 for s in result.record["metadata"]["topic_switches"]}
    assert replies == transcript.assistants
    kept = [u == t for i, (u, t) in enumerate(zip(users, transcript.users, strict=True))]
    assert all(same for i, same in enumerate(kept) if i not in switched)
