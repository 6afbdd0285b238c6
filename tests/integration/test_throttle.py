"""The run-wide throttle: the requests-per-minute cap and the back-off, on a fake clock; then
through real clients against the fake server (sharing, pacing, Retry-After, failure reports)."""

from __future__ import annotations

import asyncio
import gc
import heapq
import itertools
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import openai
import pytest
from langchain_core.messages import HumanMessage

from graph_distill.context import PipelineContext
from graph_distill.llm.models import chat_model, describe_error
from graph_distill.llm.resources import (
    RunResources,
    node_resources,
    run_resources,
    with_resources,
)
from graph_distill.llm.throttle import (
    BackoffPolicy,
    RunThrottle,
    ThrottledTransport,
    is_stream_cut,
    request_succeeded,
    stock_http_client,
)
from tests.support.fake_openai import FakeOpenAIServer, FaultRates

T = TypeVar("T")
FAILURES_TO_PAUSE = 11  # more than half of the default window of 20


class FakeClock:
    """Time that moves only by sleeping: a sync sleep moves it at once; async sleepers wake in
    deadline order as ``run`` moves time to the earliest deadline once every task waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    async def async_sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        woken = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self.now + seconds, next(self._order), woken))
        await woken

    async def run(self, *jobs: Awaitable[T]) -> list[T]:
        tasks = [asyncio.ensure_future(job) for job in jobs]
        while True:
            for _ in range(20):  # let every task go on until it sleeps or ends
                await asyncio.sleep(0)
            if all(task.done() for task in tasks):
                return [task.result() for task in tasks]
            assert self._sleepers, "a task is blocked on something other than the clock"
            deadline, _, woken = heapq.heappop(self._sleepers)
            self.now = max(self.now, deadline)
            woken.set_result(None)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def throttle_on(
    clock: FakeClock, rpm: float | None = None, policy: BackoffPolicy | None = None
) -> RunThrottle:
    return RunThrottle(
        rpm, policy=policy, clock=clock, sleep=clock.sleep, async_sleep=clock.async_sleep
    )


def starts(throttle: RunThrottle, clock: FakeClock, count: int) -> list[float]:
    times = []
    for _ in range(count):
        throttle.acquire()
        times.append(clock.now)
    return times


def most_in_any_minute(times: list[float]) -> int:
    return max(sum(start <= t < start + 60 for t in times) for start in times)


def fail(throttle: RunThrottle, clock: FakeClock, count: int, started_at: float | None = None):
    for _ in range(count):
        throttle.record(False, clock.now if started_at is None else started_at)


# ---------------------------------------------------------------- the cap


def test_first_request_goes_at_once_and_the_next_are_evenly_spaced(clock: FakeClock) -> None:
    throttle = throttle_on(clock, rpm=30)
    assert starts(throttle, clock, 5) == [0.0, 2.0, 4.0, 6.0, 8.0]


def test_cap_holds_over_every_minute_even_after_idle_time(clock: FakeClock) -> None:
    throttle = throttle_on(clock, rpm=10)
    times = starts(throttle, clock, 25)
    clock.now += 600  # a long idle time must not have saved up a burst
    after_idle = starts(throttle, clock, 25)
    assert most_in_any_minute(times + after_idle) == 10
    assert after_idle[0] == times[-1] + 600 and after_idle[1] - after_idle[0] == 6.0


def test_no_cap_never_waits(clock: FakeClock) -> None:
    throttle = throttle_on(clock)
    assert starts(throttle, clock, 100) == [0.0] * 100
    assert clock.sleeps == []


def test_non_blocking_acquire_takes_only_a_free_turn(clock: FakeClock) -> None:
    throttle = throttle_on(clock, rpm=60)
    assert throttle.acquire(blocking=False)
    assert not throttle.acquire(blocking=False)
    clock.now += 1.0
    assert throttle.acquire(blocking=False)


async def test_concurrent_waiters_queue_in_order_and_sleep_once_each(clock: FakeClock) -> None:
    throttle = throttle_on(clock, rpm=60)

    async def one() -> float:
        await throttle.aacquire()
        return clock.now

    times = await clock.run(*(one() for _ in range(16)))
    assert sorted(times) == [float(i) for i in range(16)]
    assert len(clock.sleeps) == 15  # each waiter slept once, straight to its turn: no polling


def test_rpm_must_be_positive() -> None:
    with pytest.raises(ValueError, match="requests_per_minute"):
        RunThrottle(0)


# ---------------------------------------------------------------- the back-off


def test_most_failures_among_recent_requests_pause_new_ones(clock: FakeClock) -> None:
    throttle = throttle_on(clock)
    fail(throttle, clock, FAILURES_TO_PAUSE - 1)
    for _ in range(9):
        throttle.record(True, clock.now)
    assert throttle.acquire(blocking=False)  # half failed: not most
    fail(throttle, clock, 1)
    assert not throttle.acquire(blocking=False)
    throttle.acquire()
    assert clock.now == 2.0 and clock.sleeps == [2.0]  # one sleep for the whole pause
    assert throttle.stats().pauses == (2.0,)


def test_failures_older_than_the_window_do_not_count(clock: FakeClock) -> None:
    throttle = throttle_on(clock)
    fail(throttle, clock, FAILURES_TO_PAUSE - 1)
    clock.now += 60.0
    fail(throttle, clock, 1)
    assert throttle.acquire(blocking=False)
    assert throttle.stats().pauses == ()


def test_only_the_last_twenty_outcomes_count(clock: FakeClock) -> None:
    throttle = throttle_on(clock)
    fail(throttle, clock, FAILURES_TO_PAUSE - 1)
    for _ in range(20):
        throttle.record(True, clock.now)
    fail(throttle, clock, FAILURES_TO_PAUSE - 1)
    assert throttle.stats().pauses == ()


def test_pauses_double_up_to_the_cap_and_reset_after_a_healthy_window(clock: FakeClock) -> None:
    throttle = throttle_on(clock)
    for _ in range(7):
        throttle.acquire()  # waits out the previous pause
        fail(throttle, clock, FAILURES_TO_PAUSE)
    assert throttle.stats().pauses == (2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0)
    throttle.acquire()
    for _ in range(20):
        throttle.record(True, clock.now)
    fail(throttle, clock, FAILURES_TO_PAUSE)
    assert throttle.stats().pauses[-1] == 2.0


def test_requests_started_before_a_pause_do_not_extend_it(clock: FakeClock) -> None:
    throttle = throttle_on(clock)
    clock.now = 10.0
    fail(throttle, clock, FAILURES_TO_PAUSE, started_at=9.0)
    clock.now = 10.5
    fail(throttle, clock, 16, started_at=9.5)  # in flight when the pause began
    stats = throttle.stats()
    assert stats.pauses == (2.0,)
    assert (stats.requests, stats.failed) == (27, 27)


async def test_a_pause_sends_waiting_requests_back_in_line(clock: FakeClock) -> None:
    throttle = throttle_on(clock, rpm=60)

    async def one() -> float:
        await throttle.aacquire()
        return clock.now

    async def trip() -> None:
        fail(throttle, clock, FAILURES_TO_PAUSE)

    *times, _ = await clock.run(one(), one(), one(), one(), trip())
    assert times[0] == 0.0
    assert all(t >= 2.0 for t in times[1:]), times  # none inside the 2 s pause
    ordered = sorted(times)
    assert all(later - earlier >= 1.0 for earlier, later in itertools.pairwise(ordered))


def test_statuses_that_count_as_failures() -> None:
    assert [request_succeeded(code) for code in (200, 400, 401, 404, 429, 500, 503)] == [
        True,
        True,
        True,
        True,
        False,
        False,
        False,
    ]


# ---------------------------------------------------------------- through real clients


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def context_for(server: FakeOpenAIServer, **fields: object) -> PipelineContext:
    return PipelineContext(base_url=server.base_url, api_key="sk-test", **fields)


def throttle_of(model: object) -> RunThrottle:
    client = model.http_async_client  # type: ignore[attr-defined]
    assert isinstance(client, openai.DefaultAsyncHttpxClient)
    transport = client._transport  # the test reads it; the product never does
    assert isinstance(transport, ThrottledTransport)
    return transport.throttle


async def test_every_model_of_a_run_shares_its_throttle(fake: FakeOpenAIServer) -> None:
    ctx = context_for(fake, distill_model="notes")
    resources = RunResources(120.0)
    built = [
        chat_model(ctx, "user", temperature=0.9, max_tokens=50, resources=resources),
        chat_model(ctx, "assistant", temperature=0.7, max_tokens=500, resources=resources),
        chat_model(ctx, "distill", temperature=0.3, max_tokens=900, resources=resources),
    ]
    assert all(throttle_of(model) is resources.throttle for model in built)
    assert resources.throttle.requests_per_minute == 120.0
    other = RunResources(120.0)
    assert throttle_of(chat_model(ctx, "user", temperature=0.9, max_tokens=50, resources=other))
    assert other.throttle is not resources.throttle


async def test_a_run_builds_each_model_once_and_closes_its_client(fake: FakeOpenAIServer) -> None:
    ctx = context_for(fake)
    async with RunResources() as resources:
        first = chat_model(ctx, "user", temperature=0.9, max_tokens=9, resources=resources)
        again = chat_model(ctx, "user", temperature=0.9, max_tokens=9, resources=resources)
        assert again is first
        await first.ainvoke([HumanMessage("hi")])
        client = resources.http_client()
    assert client.is_closed
    assert resources.stats().requests == 1


async def test_nodes_find_the_run_resources_in_their_config(fake: FakeOpenAIServer) -> None:
    resources = RunResources()
    config = with_resources({"configurable": {"thread_id": "t"}}, resources)
    assert config["configurable"]["thread_id"] == "t"
    assert run_resources(config) is resources and run_resources({}) is None
    ctx = PipelineContext(requests_per_minute=60.0)
    async with node_resources(config, ctx) as found:
        assert found is resources
    assert not resources.http_client().is_closed  # the runner's: closed by the runner


async def test_a_node_call_without_a_runner_gets_its_own_resources_closed_after_it() -> None:
    ctx = PipelineContext(requests_per_minute=60.0, stock=True)
    async with node_resources({}, ctx) as first:
        client = first.http_client()
        assert first.requests_per_minute == 60.0 and first.stock
        async with node_resources({}, ctx) as second:
            assert second is not first
    assert client.is_closed
    # The context's own data, what Studio and servers send, is unchanged.
    assert ctx == PipelineContext(requests_per_minute=60.0, stock=True)


def test_a_run_derives_a_value_once_per_source_object() -> None:
    resources = RunResources()
    made: list[str] = []

    def make(message: HumanMessage) -> str:
        made.append(message.text)
        return message.text.upper()

    first, edited = HumanMessage("teh cat", id="m0"), HumanMessage("the cat", id="m0")
    assert resources.derived("upper", first, make) == "TEH CAT"
    assert resources.derived("upper", first, make) == "TEH CAT"
    assert resources.derived("upper", edited, make) == "THE CAT"  # a new object: derived anew
    assert resources.derived("other", first, lambda m: m.text.lower()) == "teh cat"  # apart
    assert made == ["teh cat", "the cat"]


def test_a_derived_value_goes_with_its_source() -> None:
    """A run of many records must not keep every prompt it sent (memory flat in records)."""
    resources = RunResources()
    kept = HumanMessage("kept")
    resources.derived("plain", kept, lambda m: m.text)
    for number in range(1000):
        resources.derived("plain", HumanMessage(f"prompt {number}"), lambda m: m.text)
    gc.collect()
    alive = [entry[0]() for entry in resources._derived.values()]
    assert alive == [kept]


async def test_rpm_paces_every_request_retries_included(fake: FakeOpenAIServer) -> None:
    ctx = context_for(fake, requests_per_minute=300.0, max_retries=2)  # one every 0.2 s
    model = chat_model(ctx, "user", temperature=0.9, max_tokens=20, resources=RunResources(300.0))
    fake.enqueue_fault("429", retry_after=0.01)
    await asyncio.gather(*(model.ainvoke([HumanMessage(f"hi {i}")]) for i in range(6)))
    arrivals = [record.received_at for record in fake.records]
    assert len(arrivals) == 7
    # Unpaced, 7 requests arrive within milliseconds; paced, their starts span 6 x 0.2 s.
    assert max(arrivals) - min(arrivals) >= 0.9
    stats = throttle_of(model).stats()
    assert (stats.requests, stats.failed) == (7, 1)


async def test_retry_after_is_honoured(fake: FakeOpenAIServer) -> None:
    ctx = context_for(fake, max_retries=2)
    model = chat_model(ctx, "user", temperature=0.9, max_tokens=20, resources=RunResources())
    fake.enqueue_fault("429", retry_after=0.6)
    await model.ainvoke([HumanMessage("hello")])
    first, retry = fake.records
    assert first.fault == "429" and retry.fault is None
    assert retry.received_at - first.received_at >= 0.55


async def test_a_cut_stream_is_one_failure_and_a_whole_one_one_success(
    fake: FakeOpenAIServer,
) -> None:
    ctx = context_for(fake, max_retries=0)
    model = chat_model(ctx, "assistant", temperature=0.7, max_tokens=200, resources=RunResources())
    fake.enqueue_fault("drop", after_chunks=2)
    with pytest.raises(Exception):  # noqa: B017 - the transport's own error type
        async for _chunk in model.astream([HumanMessage("tell me a story")]):
            pass
    assert (throttle_of(model).stats().requests, throttle_of(model).stats().failed) == (1, 1)
    chunks = [chunk async for chunk in model.astream([HumanMessage("another one")])]
    assert chunks and fake.requests[-1].get("stream") is True
    assert (throttle_of(model).stats().requests, throttle_of(model).stats().failed) == (2, 1)


async def test_a_failing_server_gets_a_pause_not_a_flood() -> None:
    throttle = RunThrottle(policy=BackoffPolicy(first_pause=0.5))
    with FakeOpenAIServer(faults=FaultRates(rate_500=1.0)) as server:
        client = openai.AsyncOpenAI(
            base_url=server.base_url,
            api_key="sk-test",
            max_retries=0,
            http_client=stock_http_client(throttle),
        )
        for i in range(FAILURES_TO_PAUSE + 1):
            with pytest.raises(openai.InternalServerError):
                await client.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": f"try {i}"}]
                )
        await client.close()
        records = server.records
    assert len(records) == FAILURES_TO_PAUSE + 1
    assert records[-1].received_at - records[-2].received_at >= 0.45
    assert throttle.stats().pauses == (0.5,)


# ------------------------------------------------ a run's own client: aiohttp under the SDK


@pytest.mark.parametrize("aiohttp", [False, True], ids=["httpx", "aiohttp"])
async def test_a_refused_or_dropped_connection_is_not_taken_for_a_timeout(
    fake: FakeOpenAIServer, aiohttp: bool
) -> None:
    refused = PipelineContext(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0)
    async with RunResources(aiohttp=aiohttp) as resources:
        for ctx, fault in ((refused, None), (context_for(fake, max_retries=0), "drop")):
            if fault:
                fake.enqueue_fault(fault)
            model = chat_model(ctx, "user", temperature=0.9, max_tokens=9, resources=resources)
            with pytest.raises(openai.APIConnectionError) as caught:
                await model.ainvoke([HumanMessage("hi")])
            assert not isinstance(caught.value, openai.APITimeoutError)
            assert describe_error(caught.value).startswith("could not reach the server")
        assert (resources.stats().requests, resources.stats().failed) == (2, 2)


async def test_a_run_on_aiohttp_counts_a_cut_stream_and_closes_its_session(
    fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAPH_DISTILL_STOCK", raising=False)  # aiohttp is the fast path's
    ctx = context_for(fake, max_retries=0)
    async with RunResources(aiohttp=True) as resources:
        model = chat_model(ctx, "assistant", temperature=0.7, max_tokens=200, resources=resources)
        fake.enqueue_fault("drop", after_chunks=2)
        with pytest.raises(Exception) as caught:
            async for _chunk in model.astream([HumanMessage("tell me a story")]):
                pass
        assert is_stream_cut(caught.value)
        chunks = [chunk async for chunk in model.astream([HumanMessage("another one")])]
        assert chunks
        client = resources.http_client()
        assert isinstance(client, openai.DefaultAioHttpClient)
        assert (resources.stats().requests, resources.stats().failed) == (2, 1)
    assert client.is_closed
