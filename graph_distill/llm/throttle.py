"""Run-wide request pacing: an optional requests-per-minute cap, and a back-off that pauses new
requests while most recent ones fail.

One ``RunThrottle`` serves every model a run builds (it belongs to the run's
``graph_distill.llm.resources.RunResources``). It is a LangChain ``BaseRateLimiter``, but
it is not handed to ChatOpenAI's ``rate_limiter``: that is consulted once per model call, while
the openai client retries 429s, 5xx answers and dropped connections underneath it, and each of
those retries is a request too (it costs quota, and its failure is what a back-off must see).
So the throttle sits in the HTTP client's transport (``ThrottledTransport``, httpx's public
transport API): every attempt waits for its turn and reports whether it succeeded.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import urllib.request
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import NoReturn

import httpx2
import openai
from langchain_core.rate_limiters import BaseRateLimiter

logger = logging.getLogger(__name__)

SECONDS_PER_MINUTE = 60.0
# Doubling stops mattering long before this; it only keeps 2**level finite.
MAX_BACKOFF_LEVEL = 16


@dataclass(frozen=True, kw_only=True)
class BackoffPolicy:
    """Pause new requests when more than ``failure_share`` of the last ``window_requests``
    requests (those ended within ``window_seconds``) failed. Pauses double from
    ``first_pause`` up to ``max_pause`` while failures go on; a full window that is mostly
    successful resets them."""

    window_requests: int = 20
    window_seconds: float = 60.0
    failure_share: float = 0.5
    first_pause: float = 2.0
    max_pause: float = 60.0

    @property
    def failures_to_pause(self) -> int:
        return math.floor(self.window_requests * self.failure_share) + 1

    def pause_after(self, earlier_pauses: int) -> float:
        return min(self.first_pause * 2.0**earlier_pauses, self.max_pause)


@dataclass(frozen=True)
class ThrottleStats:
    requests: int
    failed: int
    pauses: tuple[float, ...]

    @property
    def paused_seconds(self) -> float:
        return sum(self.pauses)


class RunThrottle(BaseRateLimiter):
    """Start times for requests: at most ``requests_per_minute`` (None = no cap), evenly spaced,
    and none during a back-off pause.

    Each request reserves the next free start time, so concurrent waiters queue in order and
    sleep exactly until their turn (no polling). Spacing starts 60/rpm seconds apart holds the
    cap over every 60-second window; there is no bucket to fill up, so no burst after idle
    time (``InMemoryRateLimiter`` starts empty, and any ``max_bucket_size`` above 1 lets a
    burst exceed the cap). A pause that begins while a request waits sends it back in line.
    """

    def __init__(
        self,
        requests_per_minute: float | None = None,
        *,
        policy: BackoffPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        async_sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if requests_per_minute is not None and not requests_per_minute > 0:
            raise ValueError("requests_per_minute must be > 0 (or None for no cap)")
        self.requests_per_minute = requests_per_minute
        self.policy = policy or BackoffPolicy()
        self._interval = SECONDS_PER_MINUTE / requests_per_minute if requests_per_minute else 0.0
        self._clock = clock
        self._sleep = sleep
        self._async_sleep = async_sleep
        self._lock = threading.Lock()
        self._next_start = -math.inf
        self._paused_until = -math.inf
        self._last_pause_at = -math.inf
        self._level = 0
        self._recent: deque[tuple[float, bool]] = deque(maxlen=self.policy.window_requests)
        self._requests = 0
        self._failed = 0
        self._pauses: list[float] = []

    def now(self) -> float:
        return self._clock()

    def acquire(self, *, blocking: bool = True) -> bool:
        if not blocking:
            return self._start_if_free()
        while True:
            wait = self._reserve()
            if wait > 0:
                self._sleep(wait)
            if not self._paused():
                return True

    async def aacquire(self, *, blocking: bool = True) -> bool:
        if not blocking:
            return self._start_if_free()
        while True:
            wait = self._reserve()
            if wait > 0:
                await self._async_sleep(wait)
            if not self._paused():
                return True

    def record(self, succeeded: bool, started_at: float) -> None:
        """The outcome of a request that started (``now()``) at ``started_at``. Outcomes of
        requests started before the latest pause are counted but do not extend it: the pause
        already answered their failures."""
        with self._lock:
            self._requests += 1
            self._failed += not succeeded
            if started_at < self._last_pause_at:
                return
            now = self._clock()
            self._recent.append((now, succeeded))
            while self._recent[0][0] <= now - self.policy.window_seconds:
                self._recent.popleft()
            failures = sum(not ok for _, ok in self._recent)
            if failures >= self.policy.failures_to_pause:
                self._pause(now, failures)
            elif len(self._recent) == self.policy.window_requests:
                self._level = 0

    def server_coping(self) -> bool:
        """Whether most recent requests succeeded (their failures look sporadic)."""
        with self._lock:
            failures = sum(not ok for _, ok in self._recent)
            return len(self._recent) - failures > failures

    def stats(self) -> ThrottleStats:
        with self._lock:
            return ThrottleStats(self._requests, self._failed, tuple(self._pauses))

    def _reserve(self) -> float:
        """Take the next free start time; seconds until it."""
        with self._lock:
            now = self._clock()
            start = max(now, self._paused_until, self._next_start)
            self._next_start = start + self._interval
            return start - now

    def _start_if_free(self) -> bool:
        with self._lock:
            now = self._clock()
            if max(self._paused_until, self._next_start) > now:
                return False
            self._next_start = now + self._interval
            return True

    def _paused(self) -> bool:
        with self._lock:
            return self._paused_until > self._clock()

    def _pause(self, now: float, failures: int) -> None:
        pause = self.policy.pause_after(self._level)
        self._level = min(self._level + 1, MAX_BACKOFF_LEVEL)
        self._paused_until = now + pause
        self._last_pause_at = now
        self._recent.clear()
        self._pauses.append(pause)
        logger.warning(
            "%d of the last %d model requests failed: pausing new requests for %.0f s",
            failures,
            self.policy.window_requests,
            pause,
        )


def request_succeeded(status_code: int) -> bool:
    """Whether an answer counts as the server coping (429 and 5xx do not)."""
    return status_code != 429 and status_code < 500


_CUT_MARK = "graph_distill_stream_cut"
_COPING_MARK = "graph_distill_server_coping"


def is_stream_cut(error: BaseException) -> bool:
    """Whether ``error`` comes from a streamed reply cut midway: the openai client wraps that
    in an ``APIConnectionError`` like a failed connection, but, unlike one, never retries it."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if getattr(current, _CUT_MARK, False):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def failed_while_coping(error: BaseException) -> bool:
    """Whether the request behind ``error`` failed while most of the run's recent requests
    succeeded (a sporadic fault, not a failing server). False when nothing says so."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        for holder in (current, getattr(current, "response", None)):
            if getattr(holder, _COPING_MARK, False):
                return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _raise_as(plain: Exception, error: Exception) -> NoReturn:
    """Raise ``error`` as the client's ``plain`` form of it (itself, or one with its cause)."""
    if plain is error:
        raise error
    raise plain from error.__cause__


def _same(error: Exception) -> Exception:
    return error


class _ReportedBody(httpx2.AsyncByteStream):
    """A response body that reports once whether it arrived whole, and marks the error of one
    that did not (a streamed reply's as cut: see ``is_stream_cut``)."""

    def __init__(
        self,
        response: httpx2.Response,
        report: Callable[[bool], None],
        plain_error: Callable[[Exception], Exception],
        coping: Callable[[], bool],
    ) -> None:
        self._response = response
        self._report = report
        self._plain_error = plain_error
        self._coping = coping
        self._streamed = response.headers.get("content-type", "").startswith("text/event-stream")
        self._parts: AsyncIterator[bytes] | None = None
        self.reported = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        # Read again from where it stopped: the SDK drains a stream after its last event.
        if self._parts is None:
            self._parts = self._response.aiter_raw()
        try:
            async for part in self._parts:
                yield part
        except Exception as error:
            plain = self._plain_error(error)
            self._settle(False)
            if self._streamed:
                setattr(plain, _CUT_MARK, True)
            else:  # read inside the client's send: the SDK retries it like a failed connection
                setattr(plain, _COPING_MARK, self._coping())
            _raise_as(plain, error)
        self._settle(True)

    async def aclose(self) -> None:
        self._settle(True)  # closed before the end by the reader: not the server's failure
        await self._response.aclose()

    def _settle(self, arrived: bool) -> None:
        if not self.reported:
            self.reported = True
            self._report(arrived)


class ThrottledTransport(httpx2.AsyncBaseTransport):
    """A transport with every request paced by ``throttle`` and its outcome (status, failed
    connection, body cut short) reported to it. ``plain_error`` maps what ``transport``
    raises to the httpx error it is."""

    def __init__(
        self,
        throttle: RunThrottle,
        transport: httpx2.AsyncBaseTransport,
        plain_error: Callable[[Exception], Exception] = _same,
    ) -> None:
        self.throttle = throttle
        self._transport = transport
        self._plain_error = plain_error

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        throttle = self.throttle
        await throttle.aacquire()
        started_at = throttle.now()
        try:
            response = await self._transport.handle_async_request(request)
        except Exception as error:
            throttle.record(False, started_at)
            plain = self._plain_error(error)
            setattr(plain, _COPING_MARK, throttle.server_coping())
            _raise_as(plain, error)
        if not request_succeeded(response.status_code):
            throttle.record(False, started_at)
            setattr(response, _COPING_MARK, throttle.server_coping())
            return response
        body = _ReportedBody(
            response,
            lambda arrived: throttle.record(arrived, started_at),
            self._plain_error,
            throttle.server_coping,
        )
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=body,
            extensions=response.extensions,
            request=request,
        )

    async def aclose(self) -> None:
        await self._transport.aclose()


Transports = Callable[[str | None], httpx2.AsyncBaseTransport]


def proxy_mounts(transport_for: Transports) -> dict[str, httpx2.AsyncBaseTransport | None]:
    """The environment's proxies (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY) as a client's
    ``mounts``, each through ``transport_for(proxy URL)``: httpx reads them only for a client
    without a transport of its own."""
    proxies = urllib.request.getproxies_environment()
    mounts: dict[str, httpx2.AsyncBaseTransport | None] = {
        f"{scheme}://": transport_for(url)
        for scheme, url in proxies.items()
        if scheme in ("http", "https", "all") and url
    }
    for host in (h.strip() for h in proxies.get("no", "").split(",")):
        if not mounts or not host:
            continue
        if host == "*":
            return {}
        if "://" in host:
            mounts[host] = None
        else:
            plain = host == "localhost" or host.replace(".", "").isdigit() or ":" in host
            mounts[f"all://{host}" if plain else f"all://*{host.lstrip('*')}"] = None
    return mounts


def stock_http_client(throttle: RunThrottle) -> httpx2.AsyncClient:
    """The openai SDK's default async HTTP client (httpx, the SDK's limits, env proxies),
    throttled: public APIs only."""

    def transport_for(proxy: str | None) -> httpx2.AsyncBaseTransport:
        inner = httpx2.AsyncHTTPTransport(proxy=proxy, limits=openai.DEFAULT_CONNECTION_LIMITS)
        return ThrottledTransport(throttle, inner)

    return openai.DefaultAsyncHttpxClient(
        transport=transport_for(None), mounts=proxy_mounts(transport_for)
    )
