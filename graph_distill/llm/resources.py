"""What one run shares across all its model calls: the HTTP client and the chat models built on
it, the request throttle (its cap, back-off and request counts), the structured-output level
each server takes, and which model client path it takes (fast or stock, decided once).

A runner creates one ``RunResources`` per run and hands it to the graphs in
``config["configurable"]`` (``with_resources``); nodes take theirs from ``node_resources``. The
graphs' Context stays plain data, as Studio and HTTP clients send it. A node call of a graph
run without one (Studio, an embedding agent, a server) gets its own, closed after it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx2
from langchain_core.runnables import RunnableConfig

from graph_distill.context import ModelContext, from_environment
from graph_distill.llm.fast_client import INTERNALS, Internal, contract_problem, fast_http_client
from graph_distill.llm.structured import LevelMemory
from graph_distill.llm.throttle import RunThrottle, ThrottleStats, stock_http_client

logger = logging.getLogger(__name__)

RESOURCES_KEY = "graph_distill_resources"

Model = TypeVar("Model")
Derived = TypeVar("Derived")
Source = TypeVar("Source")


class RunResources:
    """One run's HTTP client, chat models, throttle and structured-output levels."""

    def __init__(
        self,
        requests_per_minute: float | None = None,
        *,
        throttle: RunThrottle | None = None,
        aiohttp: bool = False,
        stock: bool = False,
        distill_limit: int | None = None,
        internals: Sequence[Internal] = INTERNALS,
    ) -> None:
        """``aiohttp``: on the fast path, requests go through aiohttp rather than httpx (much
        cheaper per request); for an owner that closes the resources (``aclose``) in their
        event loop. ``stock`` (or GRAPH_DISTILL_STOCK): the stock path only. Otherwise the
        fast path's ``internals`` are checked now; if one is missing or changed, one line says
        so and the run takes the stock path. ``distill_limit``: at most that many distillation
        calls of the run at once (see ``distill_slot``)."""
        self.throttle = throttle or RunThrottle(requests_per_minute)
        self.levels = LevelMemory()
        self.stock = stock or _stock_in_environment() or _fallback_needed(internals)
        self._models: dict[Hashable, Any] = {}
        self._aiohttp = aiohttp and not self.stock
        self._client: httpx2.AsyncClient | None = None
        self._lock = threading.Lock()
        self._distill_slots = asyncio.Semaphore(distill_limit) if distill_limit else None
        # (kind, id(source)) -> (weak reference to the source, value)
        self._derived: dict[tuple[str, int], tuple[weakref.ref[Any], Any]] = {}

    @property
    def requests_per_minute(self) -> float | None:
        return self.throttle.requests_per_minute

    def stats(self) -> ThrottleStats:
        return self.throttle.stats()

    def http_client(self) -> httpx2.AsyncClient:
        """The run's one async HTTP client: every request of every model goes through the
        throttle, and connections are pooled across roles."""
        with self._lock:
            if self._client is None:
                build = fast_http_client if self._aiohttp else stock_http_client
                self._client = build(self.throttle)
            return self._client

    @asynccontextmanager
    async def distill_slot(self) -> AsyncIterator[None]:
        """Held for each distillation call. The run's bound, not LangGraph's
        ``max_concurrency``: that one also queues the saving of finished chunks' notes behind
        the chunks still waiting, and a run cut short would then ask finished chunks again."""
        if self._distill_slots is None:
            yield
            return
        async with self._distill_slots:
            yield

    def model(self, key: Hashable, build: Callable[[], Model]) -> Model:
        """The model built for ``key`` in this run (built on first use)."""
        with self._lock:
            found = self._models.get(key)
        if found is None:
            found = build()
            with self._lock:
                found = self._models.setdefault(key, found)
        return found

    def derived(self, kind: str, source: Source, make: Callable[[Source], Derived]) -> Derived:
        """``make(source)``, computed once per ``source`` object while that object lives: for
        values derived from messages, which are never changed in place once in a graph's state,
        and which every later call of a conversation would otherwise derive again. An entry
        goes with its source, so a run of many records holds only the live ones'."""
        key = (kind, id(source))
        known = self._derived.get(key)
        if known is not None and known[0]() is source:
            return known[1]
        value = make(source)
        try:
            alive = weakref.ref(source, partial(_forget, self._derived, key))
        except TypeError:  # not weakly referable: derived again on every call
            return value
        self._derived[key] = (alive, value)
        return value

    async def aclose(self) -> None:
        """Close the HTTP client (its open connections); the models are not used after."""
        with self._lock:
            client, self._client = self._client, None
            self._models.clear()
            self._derived.clear()
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


def _fallback_needed(internals: Sequence[Internal]) -> bool:
    problem = contract_problem(internals)
    if problem:
        logger.warning(problem)
    return problem is not None


def _stock_in_environment() -> bool:
    """GRAPH_DISTILL_STOCK (a graph run on a server or in Studio has no other flag)."""
    return bool(from_environment(ModelContext).get("stock"))


def with_resources(config: RunnableConfig, resources: RunResources) -> RunnableConfig:
    """``config`` with ``resources`` in its ``configurable`` (other entries kept)."""
    configurable = {**(config.get("configurable") or {}), RESOURCES_KEY: resources}
    return {**config, "configurable": configurable}


def run_resources(config: RunnableConfig) -> RunResources | None:
    """The resources a runner put in ``config`` (see ``with_resources``), or None."""
    found = (config.get("configurable") or {}).get(RESOURCES_KEY)
    return found if isinstance(found, RunResources) else None


@asynccontextmanager
async def node_resources(
    config: RunnableConfig, context: ModelContext
) -> AsyncIterator[RunResources]:
    """What one node call uses: the resources of the run ``config`` belongs to; without a
    runner's (Studio, a server, an agent that passes none), new ones for this call alone,
    closed when it ends (a graph run there shares nothing between its calls)."""
    found = run_resources(config)
    if found is not None:
        yield found
        return
    async with RunResources(context.requests_per_minute, stock=context.stock) as resources:
        yield resources


def _forget(derived: dict[tuple[str, int], Any], key: tuple[str, int], _: object) -> None:
    derived.pop(key, None)
