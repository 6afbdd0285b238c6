"""The stall limit of runs on an Agent Server, and the line saying what waits there."""

from __future__ import annotations

import time

import pytest

from graph_distill.run.progress import Reporter
from graph_distill.run.remote import (
    QUEUED,
    REQUEUED,
    RUNNING,
    ServerWatch,
    Waiting,
    stall_limit,
)


@pytest.mark.parametrize(
    ("given", "environ", "limit"),
    [
        (None, {}, 720.0),  # 6 x the engine's 120 s heartbeat
        (None, {"LG_BG_JOB_HEARTBEAT": "30"}, 180.0),
        (None, {"LG_BG_JOB_HEARTBEAT": "1"}, 10.0),  # never below 10 s
        (None, {"LG_BG_JOB_HEARTBEAT": "soon"}, 720.0),
        (4.5, {"LG_BG_JOB_HEARTBEAT": "30"}, 4.5),  # the flag wins
    ],
)
def test_the_stall_limit_follows_the_heartbeat(
    given: float | None, environ: dict[str, str], limit: float
) -> None:
    assert stall_limit(given, environ) == limit


def test_the_summary_counts_states_with_their_longest_waits() -> None:
    watch = ServerWatch(Reporter(), 30.0)
    now = time.monotonic()
    for thread, label, state, waited in [
        ("a", "#1 A", QUEUED, 41.0),
        ("b", "#2 B", QUEUED, 5.0),
        ("c", "#3 C", RUNNING, 2.0),
        ("d", "#4 D", REQUEUED, 75.0),
    ]:
        watch.waiting[thread] = Waiting(label, state, since=now - waited, progress_at=now)

    line = watch.summary()

    assert line.startswith("on the server: 2 queued (longest 41.")
    assert ", 1 running (longest 2." in line
    assert line.endswith(", 1 waiting on a re-queued run (#4 D 1 min 15 s)")
    assert ServerWatch(Reporter(), 30.0).summary() == ""
