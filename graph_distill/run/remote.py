"""Runs on a LangGraph Agent Server (``--server URL``): each conversation, and each
distillation, is a background run of the server's ``pipeline``, ``conversation`` or ``distill``
graph on a thread of its own. The server's queue and workers do the work (and hold the model
key); this side starts or re-attaches to the runs, joins them and writes the same files, usage
and report as a local run.

Thread ids are UUIDs derived from the run and the item, so a retry or ``--resume`` finds the
item's thread again: a thread whose run finished gives its output, one still running is joined,
and only a thread with no run, or whose run failed, gets a new one (it goes on from its last
checkpoint).

While the command waits, each run is watched: whether it is queued, running, or waiting on a
re-queued run (its worker was lost and the engine put it back in the queue), and when its
thread last got a checkpoint. A run with no new checkpoint past the stall limit is reported by
its thread id, cancelled and re-submitted from its last checkpoint; a second stall fails the
item (``--resume`` retries it), so the command never waits without end."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import httpx
from langgraph_sdk import get_client
from langgraph_sdk.client import LangGraphClient
from langgraph_sdk.errors import AuthenticationError, LangGraphError, PermissionDeniedError

from graph_distill.context import (
    ConversationContext,
    DistillContext,
    ModelContext,
    PipelineContext,
)
from graph_distill.conversation.graph import recursion_limit
from graph_distill.files.readers import ReadOptions, SourceConversation
from graph_distill.llm.settings import MODEL_SETTINGS
from graph_distill.run.distilling import (
    DistillTarget,
    Producer,
    distill_inputs,
    distilled_data,
)
from graph_distill.run.driver import Driver, ItemWork, OnGenerated, RunPlan, open_run
from graph_distill.run.ledger import (
    MIMO_V2_FLASH_PRICES,
    CostLedger,
    Prices,
    format_duration,
)
from graph_distill.run.manifest import RunItem
from graph_distill.run.progress import RecordReporter, Reporter
from graph_distill.run.summary import RESUME_HINT, RunSummary, reported

# Fixed: thread ids must come out the same in every process and on every machine.
THREAD_NAMESPACE = uuid.UUID("6f1c2a52-8d7e-4e0b-9a55-3b1f0c9d2e41")
# Steps of the distill graph on top of the conversation's (split, map, reduce, collapses).
DISTILL_STEPS = 50
UNFINISHED = ("pending", "running")
FAILED_STATUS = {"error": "failed", "timeout": "timed out", "interrupted": "was cancelled"}
SERVER_ERRORS = (LangGraphError, httpx.HTTPError)
# A join waits for a whole run; it is made again when the read times out.
CLIENT_TIMEOUT = httpx.Timeout(connect=10.0, read=300.0, write=60.0, pool=None)
# The engine's heartbeat (langgraph-api's BG_JOB_HEARTBEAT, overridden by this variable). A
# lost worker's runs are re-queued once their heartbeat key lapses (2 heartbeats, at least 4 s)
# and a sweep comes round (every 2 heartbeats): within 4 heartbeats, 6 s at the 1 s minimum.
HEARTBEAT_ENV = "LG_BG_JOB_HEARTBEAT"
ENGINE_HEARTBEAT_SECONDS = 120.0
# So a run silent for 6 heartbeats is stuck, not slow (the engine had its chance).
STALL_HEARTBEATS = 6
MIN_STALL_SECONDS = 10.0
# Checks of a run's state per stall limit, and the longest gap between two.
CHECKS_PER_LIMIT = 5
MAX_CHECK_SECONDS = 10.0
# A stalled run is re-submitted this often before its item fails.
STALL_RESUBMITS = 1
# How often the count of what waits on the server is shown (more often with a shorter stall
# limit).
PROGRESS_SECONDS = 30.0


class ServerError(Exception):
    """The server cannot serve this run at all (unreachable, key refused, graph missing): one
    plain line for the user."""


class RunFailed(Exception):
    """One item's run ended without output on the server (error, timeout, cancelled)."""


class Stalled(Exception):
    """A run showed no new checkpoint for longer than the stall limit."""


def stall_limit(given: float | None, environ: Mapping[str, str] = os.environ) -> float:
    """``--server-stall-timeout``, else 6 engine heartbeats (LG_BG_JOB_HEARTBEAT as set here,
    which should be the server's; 120 s unless set): 720 s by default."""
    if given is not None:
        return given
    try:
        heartbeat = max(float(environ.get(HEARTBEAT_ENV, "")), 1.0)
    except ValueError:
        heartbeat = ENGINE_HEARTBEAT_SECONDS
    return max(STALL_HEARTBEATS * heartbeat, MIN_STALL_SECONDS)


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str | None = field(default=None, repr=False)
    # --server-stall-timeout; None: derived from the heartbeat (stall_limit).
    stall_timeout: float | None = None

    def client(self) -> LangGraphClient:
        # No pool timeout: with -j above the client's connection limit, joins wait their turn.
        return get_client(url=self.url, api_key=self.api_key, timeout=CLIENT_TIMEOUT)


def thread_id(*parts: Any) -> str:
    """The UUID the server knows one item's thread by, derived from what identifies it."""
    return str(uuid.uuid5(THREAD_NAMESPACE, json.dumps(parts, sort_keys=True, default=str)))


def server_context(
    ctx: PipelineContext, given: Sequence[str], schema: type[ModelContext]
) -> dict[str, Any]:
    """The run context sent with each run: ``ctx``'s values of the graph's context ``schema``,
    of the model settings only those named in ``given`` (the server's own environment decides
    the others, the key always)."""
    return {
        f.name: getattr(ctx, f.name)
        for f in fields(schema)
        if (f.name not in _MODEL_FIELDS or f.name in given) and getattr(ctx, f.name) is not None
    }


# Sent only when given on the command line; the key never.
_MODEL_FIELDS = (*MODEL_SETTINGS, "requests_per_minute")


def describe_server_error(server: Server, error: BaseException) -> str:
    if isinstance(error, AuthenticationError | PermissionDeniedError):
        return f"the server {server.url} refused the request: check --server-api-key"
    if isinstance(error, httpx.TransportError):
        return f"cannot reach the server {server.url}: {error or type(error).__name__}"
    if isinstance(error, LangGraphError | httpx.HTTPStatusError):
        return f"the server {server.url} answered: {error}".splitlines()[0]
    return f"{type(error).__name__}: {error}".splitlines()[0]


def record_server_failure(
    summary: RunSummary, reporter: Reporter, server: Server, label: str, error: Exception
) -> None:
    """One item lost to the server (its run failed, or the server stopped answering)."""
    reason = str(error) if isinstance(error, RunFailed) else describe_server_error(server, error)
    summary.failures.append((label, reason))
    reporter.failed(label, reason)


async def check_server(server: Server, client: LangGraphClient, graph_id: str) -> None:
    """ServerError unless the server answers and serves ``graph_id``."""
    try:
        assistants = await client.assistants.search(graph_id=graph_id, limit=1)
    except SERVER_ERRORS as error:
        raise ServerError(describe_server_error(server, error)) from error
    if not assistants:
        raise ServerError(f"the server {server.url} serves no {graph_id!r} graph")


QUEUED, RUNNING, REQUEUED = "queued", "running", "waiting on a re-queued run"


@dataclass
class Waiting:
    """One item's run as last seen on the server."""

    label: str
    state: str
    since: float
    # When the run last showed progress (started, or a new checkpoint), and that checkpoint.
    progress_at: float
    checkpoint: str | None = None


class ServerWatch:
    """What each item's run is doing on the server: changes worth a line (a run re-queued, a
    stall) as they happen, and every PROGRESS_SECONDS how many runs are queued, running or
    waiting on a re-queued run, with the longest waits."""

    def __init__(self, reporter: Reporter, stall_seconds: float) -> None:
        self.reporter = reporter
        self.stall_seconds = stall_seconds
        self.check_seconds = min(stall_seconds / CHECKS_PER_LIMIT, MAX_CHECK_SECONDS)
        self.progress_seconds = min(PROGRESS_SECONDS, stall_seconds)
        self.waiting: dict[str, Waiting] = {}

    @asynccontextmanager
    async def showing(self) -> AsyncIterator[None]:
        ticker = asyncio.ensure_future(self._tick())
        try:
            yield
        finally:
            ticker.cancel()
            with suppress(asyncio.CancelledError):
                await ticker

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.progress_seconds)
            if line := self.summary():
                self.reporter.note(line)

    def summary(self) -> str:
        """``on the server: 2 queued (longest 41.0 s), 4 running, 1 waiting on a re-queued
        run (#3 ToolUsage 12.0 s)``; empty when nothing waits."""
        now = time.monotonic()
        parts = []
        for state in (QUEUED, RUNNING, REQUEUED):
            items = sorted(
                (w for w in self.waiting.values() if w.state == state), key=lambda w: w.since
            )
            if not items:
                continue
            longest = format_duration(now - items[0].since)
            detail = (
                ", ".join(f"{w.label} {format_duration(now - w.since)}" for w in items[:3])
                if state == REQUEUED
                else f"longest {longest}"
            )
            parts.append(f"{len(items)} {state} ({detail})")
        return f"on the server: {', '.join(parts)}" if parts else ""

    async def join(
        self, client: LangGraphClient, thread: str, run_id: str, label: str, resubmitted: bool
    ) -> dict[str, Any]:
        """The run's output once it ends (RunFailed without one); Stalled when it shows no new
        checkpoint past the limit while running, or, ``resubmitted``, while waiting to start."""
        now = time.monotonic()
        state = REQUEUED if resubmitted else QUEUED
        self.waiting[thread] = Waiting(label, state, since=now, progress_at=now)
        joining = asyncio.ensure_future(_joined(client, thread, run_id))
        try:
            while not (await asyncio.wait({joining}, timeout=self.check_seconds))[0]:
                await self._check(client, thread, run_id, resubmitted)
        finally:
            self.waiting.pop(thread, None)
            joining.cancel()
            with suppress(asyncio.CancelledError):
                await joining
        return joining.result()

    async def _check(
        self, client: LangGraphClient, thread: str, run_id: str, resubmitted: bool
    ) -> None:
        status = (await client.runs.get(thread, run_id))["status"]
        waiting, now = self.waiting[thread], time.monotonic()
        if status == "running":
            checkpoint = (await client.threads.get_state(thread))["checkpoint"]["checkpoint_id"]
            if waiting.state != RUNNING or checkpoint != waiting.checkpoint:
                waiting.progress_at, waiting.checkpoint = now, checkpoint
            self._enter(waiting, RUNNING, now)
        elif status == "pending" and waiting.state == RUNNING:
            self._enter(waiting, REQUEUED, now)
            waiting.progress_at = now  # the engine took it back: its queue decides now
            self.reporter.note(
                f"{waiting.label}: its worker was lost; the server re-queued the run "
                f"(thread {thread})"
            )
        silent = now - waiting.progress_at
        counts = waiting.state == RUNNING or (waiting.state == REQUEUED and resubmitted)
        if counts and silent > self.stall_seconds:
            raise Stalled(
                f"no new checkpoint for {format_duration(silent)} while "
                f"{waiting.state} (thread {thread}, run {run_id})"
            )

    @staticmethod
    def _enter(waiting: Waiting, state: str, now: float) -> None:
        if waiting.state != state:
            waiting.state, waiting.since = state, now


async def thread_output(
    client: LangGraphClient,
    graph_id: str,
    thread: str,
    inputs: dict[str, Any],
    *,
    context: dict[str, Any],
    config: dict[str, Any],
    watch: ServerWatch,
    label: str,
) -> dict[str, Any]:
    """The output of ``graph_id`` on ``thread``: taken from a finished run, joined from one
    in flight, or from a run started now (RunFailed when it ends without output). A stalled
    run is cancelled and re-submitted from its last checkpoint, STALL_RESUBMITS times."""
    await client.threads.create(thread_id=thread, if_exists="do_nothing", graph_id=graph_id)
    for attempt in range(STALL_RESUBMITS + 1):
        latest = await client.runs.list(thread, limit=1)
        if latest and latest[0]["status"] == "success":
            return dict((await client.threads.get_state(thread))["values"])
        if latest and latest[0]["status"] in UNFINISHED:
            run_id = latest[0]["run_id"]
        else:
            run_id = await _new_run(client, graph_id, thread, inputs, context, config)
        try:
            return await watch.join(client, thread, run_id, label, resubmitted=attempt > 0)
        except Stalled as stall:
            again = attempt < STALL_RESUBMITS
            watch.reporter.note(
                f"{label}: {stall}: "
                + ("cancelled, re-submitted from its last checkpoint" if again else "cancelled")
            )
            await client.runs.cancel(thread, run_id, action="interrupt")
            if not again:
                raise RunFailed(f"the server's run stalled: {stall}") from stall
    raise AssertionError("unreachable")


async def _new_run(
    client: LangGraphClient,
    graph_id: str,
    thread: str,
    inputs: dict[str, Any],
    context: dict[str, Any],
    config: dict[str, Any],
) -> str:
    state = await client.threads.get_state(thread)
    run = await client.runs.create(
        thread,
        graph_id,
        # A failed or cancelled run left checkpoints: go on from them rather than start over.
        input=None if state["next"] else inputs,
        context=context,
        config=config,
        multitask_strategy="reject",
    )
    return str(run["run_id"])


async def _joined(client: LangGraphClient, thread: str, run_id: str) -> dict[str, Any]:
    """The values of the run's thread once the run succeeded. A join can come back while
    the run is still unfinished (its worker was lost and the engine re-queued it): join
    again. The thread's state, not the join's answer, is the output: a join ended by a
    lost worker answers with the values of that moment."""
    while True:
        try:
            output = await client.runs.join(thread, run_id)
        except httpx.ReadTimeout:
            continue  # a long run: join again
        run = await client.runs.get(thread, run_id)
        if run["status"] not in UNFINISHED:
            break
    if run["status"] == "success":
        return dict((await client.threads.get_state(thread))["values"])
    error = output.get("__error__") if isinstance(output, dict) else None
    detail = f": {error.get('error')}: {error.get('message')}" if error else ""
    raise RunFailed(f"the server's run {FAILED_STATUS.get(run['status'], run['status'])}{detail}")


@dataclass(kw_only=True)
class RemoteRun:
    """A ``run`` on the server: the plan, the settings sent as context, and the model names
    known here (those given on the command line) for the files' metadata."""

    server: Server
    plan: RunPlan
    ctx: PipelineContext
    given: Sequence[str]

    @property
    def graph_id(self) -> str:
        return "pipeline" if self.plan.distill else "conversation"


async def run_on_server(remote: RemoteRun, reporter: Reporter) -> RunSummary:
    """``run`` with the work done on the server: recorded in the conversation directory like a
    local run (so ``--resume`` finds it), its items re-attached by their thread ids."""
    plan = remote.plan
    client = remote.server.client()
    await check_server(remote.server, client, remote.graph_id)
    async with open_run(plan) as (run_id, _, manifest):
        summary = RunSummary(
            run_id=run_id,
            ledger=CostLedger(plan.prices, budget_tokens=plan.budget_tokens),
        )
        watch = ServerWatch(reporter, stall_limit(remote.server.stall_timeout))
        executor = ServerExecutor(remote, client, summary, watch)
        settings = {
            **plan.report_settings,
            **_model_report(remote.ctx, remote.given),
            "run_id": run_id,
        }
        with reported(summary, plan.conversation_dir, remote.ctx, settings, RESUME_HINT):
            async with watch.showing():
                await Driver(plan, executor, manifest, summary, reporter).execute()
    return summary


def _model_report(ctx: PipelineContext, given: Sequence[str]) -> dict[str, Any]:
    """The report's model settings: those sent to the server; None means the server's own."""
    names = ("base_url", "model", "user_model", "assistant_model", "distill_model")
    values = {name: getattr(ctx, name) if name in given else None for name in names}
    return {"base_url": values.pop("base_url"), "model": values.pop("model"), "models": values}


def given_model(ctx: PipelineContext, given: Sequence[str], role: str) -> str | None:
    """The model ``role`` is played by when the command line said so; None: the server's."""
    for name in (f"{role}_model", "model"):
        if name in given:
            return getattr(ctx, name)
    return None


class ServerExecutor:
    """Items' graphs run on the server, one thread per item; their usage is read from the
    outputs (the calls are made there)."""

    def __init__(
        self,
        remote: RemoteRun,
        client: LangGraphClient,
        summary: RunSummary,
        watch: ServerWatch,
    ) -> None:
        self.remote = remote
        self.watch = watch
        self.ctx = remote.ctx
        self.distill_model = given_model(remote.ctx, remote.given, "distill")
        self.client = client
        self.summary = summary
        self.reporter = watch.reporter
        schema = PipelineContext if remote.plan.distill else ConversationContext
        self.context = server_context(remote.ctx, remote.given, schema)
        self.config = {
            "recursion_limit": recursion_limit(remote.ctx.max_rounds) + DISTILL_STEPS,
            "max_concurrency": remote.plan.concurrency,
        }

    async def generate(self, work: ItemWork, generated: OnGenerated) -> Mapping[str, Any]:
        started = self.summary.ledger.now()
        output = await self._output(work)
        record = output.get("conversation_record")
        if record:
            self.summary.ledger.record("generation", record["metadata"]["usage"], started)
        self._distillation(output, started)
        return output

    async def distill_saved(self, work: ItemWork, path: Path) -> Mapping[str, Any]:
        started = self.summary.ledger.now()
        output = await self._output(work)
        self._distillation(output, started)
        return output

    async def release(self, item: RunItem) -> None:
        """The server keeps its threads: a re-run finds the outputs there."""

    def failed(self, summary: RunSummary, label: str, error: Exception) -> None:
        if not isinstance(error, (RunFailed, *SERVER_ERRORS)):
            raise error
        record_server_failure(summary, self.reporter, self.remote.server, label, error)

    async def _output(self, work: ItemWork) -> dict[str, Any]:
        return await thread_output(
            self.client,
            self.remote.graph_id,
            thread_id(self.summary.run_id, work.item.index),
            work.inputs,
            context=self.context,
            config=self.config,
            watch=self.watch,
            label=work.label,
        )

    def _distillation(self, output: Mapping[str, Any], started: float) -> None:
        if self.remote.plan.distill and "distill_usage" in output:
            self.summary.ledger.record("distillation", output["distill_usage"], started)


@dataclass(kw_only=True)
class RemoteDistill:
    """A ``distill`` on the server; a plain re-run re-attaches to the same threads."""

    server: Server
    ctx: PipelineContext
    given: Sequence[str]
    concurrency: int
    force: bool
    prices: Prices = MIMO_V2_FLASH_PRICES


def server_producer(remote: RemoteDistill, client: LangGraphClient, watch: ServerWatch) -> Producer:
    """Records distilled by runs of the server's distill graph, one thread per record (its id
    derived from the record and the settings, so a re-run finds it again)."""
    context = server_context(remote.ctx, remote.given, DistillContext)
    config = {"max_concurrency": remote.concurrency}
    model = given_model(remote.ctx, remote.given, "distill")

    async def produce(
        record: SourceConversation, summary: RunSummary, reporter: Reporter
    ) -> dict[str, Any] | None:
        thread = thread_id("distill", record.source_value, _digest(record.messages), context)
        started = summary.ledger.now()
        try:
            output = await thread_output(
                client,
                "distill",
                thread,
                {"conversation": record.messages},
                context=context,
                config=config,
                watch=watch,
                label=record.source,
            )
        except (RunFailed, *SERVER_ERRORS) as error:
            record_server_failure(summary, reporter, remote.server, record.source, error)
            return None
        summary.ledger.record("distillation", output["distill_usage"], started)
        return distilled_data(record.source_value, output, remote.ctx, model)

    return produce


async def distill_on_server(
    remote: RemoteDistill,
    inputs: Sequence[Path],
    target: DistillTarget,
    read_options: ReadOptions,
    reporter: RecordReporter,
) -> RunSummary:
    """``distill`` with each record distilled by a run of the server's distill graph."""
    client = remote.server.client()
    await check_server(remote.server, client, "distill")
    watch = ServerWatch(reporter, stall_limit(remote.server.stall_timeout))
    async with watch.showing():
        return await distill_inputs(
            inputs,
            target,
            remote.ctx,
            concurrency=remote.concurrency,
            force=remote.force,
            reporter=reporter,
            read_options=read_options,
            prices=remote.prices,
            produce=server_producer(remote, client, watch),
            model=given_model(remote.ctx, remote.given, "distill"),
            report_settings={
                "server": remote.server.url,
                **_model_report(remote.ctx, remote.given),
            },
        )


def _digest(messages: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
