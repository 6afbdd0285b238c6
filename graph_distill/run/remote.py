"""Runs on a LangGraph Agent Server (``--server URL``): each conversation, and each
distillation, is a background run of the server's ``pipeline``, ``conversation`` or ``distill``
graph on a thread of its own. The server's queue and workers do the work (and hold the model
key); this side starts or re-attaches to the runs, joins them and writes the same files, usage
and report as a local run.

Thread ids are UUIDs derived from the run and the item, so a retry or ``--resume`` finds the
item's thread again: a thread whose run finished gives its output, one still running is joined,
and only a thread with no run, or whose run failed, gets a new one (it goes on from its last
checkpoint)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
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


class ServerError(Exception):
    """The server cannot serve this run at all (unreachable, key refused, graph missing): one
    plain line for the user."""


class RunFailed(Exception):
    """One item's run ended without output on the server (error, timeout, cancelled)."""


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str | None = field(default=None, repr=False)

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


async def thread_output(
    client: LangGraphClient,
    graph_id: str,
    thread: str,
    inputs: dict[str, Any],
    *,
    context: dict[str, Any],
    config: dict[str, Any],
) -> dict[str, Any]:
    """The output of ``graph_id`` on ``thread``: taken from a finished run, joined from one
    in flight, or from a run started now (RunFailed when it ends without output)."""
    await client.threads.create(thread_id=thread, if_exists="do_nothing", graph_id=graph_id)
    latest = await client.runs.list(thread, limit=1)
    if latest and latest[0]["status"] == "success":
        return dict((await client.threads.get_state(thread))["values"])
    if latest and latest[0]["status"] in UNFINISHED:
        run_id = latest[0]["run_id"]
    else:
        state = await client.threads.get_state(thread)
        run = await client.runs.create(
            thread,
            graph_id,
            # A failed run left checkpoints: go on from them rather than start over.
            input=None if state["next"] else inputs,
            context=context,
            config=config,
            multitask_strategy="reject",
        )
        run_id = run["run_id"]
    return await _join(client, thread, run_id)


async def _join(client: LangGraphClient, thread: str, run_id: str) -> dict[str, Any]:
    while True:
        try:
            output = await client.runs.join(thread, run_id)
            break
        except httpx.ReadTimeout:
            continue  # a long run: join again
    run = await client.runs.get(thread, run_id)
    if run["status"] == "success" and isinstance(output, dict) and "__error__" not in output:
        return output
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
        executor = ServerExecutor(remote, client, summary, reporter)
        settings = {
            **plan.report_settings,
            **_model_report(remote.ctx, remote.given),
            "run_id": run_id,
        }
        with reported(summary, plan.conversation_dir, remote.ctx, settings, RESUME_HINT):
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
        reporter: Reporter,
    ) -> None:
        self.remote = remote
        self.ctx = remote.ctx
        self.distill_model = given_model(remote.ctx, remote.given, "distill")
        self.client = client
        self.summary = summary
        self.reporter = reporter
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


def server_producer(remote: RemoteDistill, client: LangGraphClient) -> Producer:
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
    return await distill_inputs(
        inputs,
        target,
        remote.ctx,
        concurrency=remote.concurrency,
        force=remote.force,
        reporter=reporter,
        read_options=read_options,
        prices=remote.prices,
        produce=server_producer(remote, client),
        model=given_model(remote.ctx, remote.given, "distill"),
        report_settings={"server": remote.server.url, **_model_report(remote.ctx, remote.given)},
    )


def _digest(messages: Sequence[Mapping[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()
