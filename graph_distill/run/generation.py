"""A run of ``run`` in this process: many conversations at once through the pipeline graph,
each conversation saved the moment its generation ends and distilled while others are still
being generated (the items are driven by run/driver.py; this module executes their graphs).

Runs are durable: the graph runs with a checkpointer (one SQLite database in the conversation
directory, thread id = conversation id) and a manifest records how far each conversation got,
so a killed or interrupted run resumes where it stopped (``RunPlan.run_id``). The graphs write
no files: the driver does, as their outputs arrive.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from langchain_core.messages import AIMessageChunk, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver

from graph_distill.context import PipelineContext
from graph_distill.conversation.graph import conversation_builder, recursion_limit
from graph_distill.distill.graph import distill_builder
from graph_distill.files.readers import read_conversation
from graph_distill.llm.models import model_name
from graph_distill.llm.resources import RunResources, with_resources
from graph_distill.pipeline import pipeline_builder
from graph_distill.run.distilling import distill_result
from graph_distill.run.driver import Driver, ItemWork, OnGenerated, RunPlan, open_run
from graph_distill.run.ledger import CostLedger
from graph_distill.run.manifest import RunItem
from graph_distill.run.progress import Reporter
from graph_distill.run.summary import RESUME_HINT, RunSummary, record_failure, reported

# The pipeline's top-level nodes, for the cost ledger's phases.
PIPELINE_PHASES = {"generate": "generation", "distill": "distillation"}


async def run_conversations(plan: RunPlan, ctx: PipelineContext, reporter: Reporter) -> RunSummary:
    """Generate ``plan.count`` conversations, ``plan.concurrency`` at a time, or finish the
    unfinished run ``plan.run_id`` (ResumeError when the directory has no such run). The run's
    calls, tokens and cost go to ``run_report.json`` in the conversation directory, also when
    it is cut short."""
    async with open_run(plan, stock=ctx.stock) as (run_id, saver, manifest):
        summary = RunSummary(
            run_id=run_id,
            ledger=CostLedger(plan.prices, budget_tokens=plan.budget_tokens),
            resources=RunResources(
                ctx.requests_per_minute,
                aiohttp=True,
                stock=ctx.stock,
                distill_limit=plan.concurrency,
            ),
        )
        executor = LocalExecutor(plan, ctx, saver, summary, reporter)
        settings = {**plan.report_settings, "run_id": run_id}
        with reported(summary, plan.conversation_dir, ctx, settings, RESUME_HINT):
            try:
                await Driver(plan, executor, manifest, summary, reporter).execute()
            finally:
                await summary.resources.aclose()
    return summary


class LocalExecutor:
    """Items' graphs run here, compiled with the run's checkpointer; progress from the nodes'
    custom events."""

    def __init__(
        self,
        plan: RunPlan,
        ctx: PipelineContext,
        saver: BaseCheckpointSaver,
        summary: RunSummary,
        reporter: Reporter,
    ) -> None:
        self.plan = plan
        self.ctx = ctx
        self.distill_model: str | None = model_name(ctx, "distill")
        self.saver = saver
        self.summary = summary
        self.reporter = reporter
        builder = pipeline_builder if plan.distill else conversation_builder
        self.graph = builder.compile(
            checkpointer=saver, name="pipeline" if plan.distill else "conversation"
        )
        self.distill_graph = distill_builder.compile(checkpointer=saver, name="distill")

    def _config(self, item: RunItem) -> RunnableConfig:
        config: RunnableConfig = {
            "configurable": {"thread_id": item.conversation_id},
            "recursion_limit": recursion_limit(self.ctx.max_rounds),
            "callbacks": [self.summary.ledger.callback(PIPELINE_PHASES)],
        }
        return with_resources(config, self.summary.resources)

    async def generate(self, work: ItemWork, generated: OnGenerated) -> Mapping[str, Any]:
        """Run the item's graph, or go on from its last checkpoint."""
        config = self._config(work.item)
        snapshot = await self.graph.aget_state(config)
        inputs: dict[str, Any] | None = work.inputs
        if snapshot.created_at is not None:
            inputs = None
            _report_resumed(snapshot.values, work.label, self.reporter)
            # Generated before the process died, maybe not yet saved.
            await generated(snapshot.values)
        return await self._stream(inputs, config, work.label, generated)

    async def distill_saved(self, work: ItemWork, path: Path) -> Mapping[str, Any]:
        """Go on with the item's pipeline run if one is checkpointed, else distill the saved
        file."""
        config = self._config(work.item)
        snapshot = await self.graph.aget_state(config)
        if snapshot.created_at is not None and snapshot.values.get("conversation_record"):
            output = await self._stream(None, config, work.label, None)
            return {**snapshot.values, **output}
        source = read_conversation(path)
        return await distill_result(
            source.messages,
            self.ctx,
            self.summary,
            graph=self.distill_graph,
            thread_id=work.item.distill_thread,
        )

    async def release(self, item: RunItem) -> None:
        await self.saver.adelete_thread(item.conversation_id)
        await self.saver.adelete_thread(item.distill_thread)

    def failed(self, summary: RunSummary, label: str, error: Exception) -> None:
        record_failure(summary, self.reporter, label, error)

    async def _stream(
        self,
        inputs: dict[str, Any] | None,
        config: RunnableConfig,
        label: str,
        generated: OnGenerated | None,
    ) -> dict[str, Any]:
        """Run (or, with no ``inputs``, resume) the graph; its final values. Progress comes
        from the nodes' custom events; the generation step's output as soon as it is done."""
        output: dict[str, Any] = {}
        modes = [
            "custom",
            "updates",
            "values",
            *(["messages"] if self.reporter.shows_tokens else []),
        ]
        stream = self.graph.astream(
            inputs, config, context=self.ctx, stream_mode=modes, subgraphs=True
        )
        async for namespace, mode, data in stream:
            if mode == "custom":
                _report_event(data, label, self.reporter)
            elif mode == "messages":
                chunk, meta = data
                if meta.get("langgraph_node") == "respond" and isinstance(chunk, AIMessageChunk):
                    self.reporter.assistant_token(label, chunk.text)
            elif namespace:
                continue
            elif mode == "updates" and "generate" in data and generated is not None:
                await generated(data["generate"])
            elif mode == "values":
                output = data
        return output


def _report_resumed(values: dict[str, Any], label: str, reporter: Reporter) -> None:
    """Show where a resumed conversation stands."""
    target = values.get("target_rounds")
    if target is None:
        return
    rounds = values.get("rounds", 0)
    reporter.started(label, target)
    reporter.round_done(label, rounds)
    reporter.note(f"{label}: resumed at round {rounds} of {target}")
    messages = values.get("conversation_messages") or []
    if messages and isinstance(messages[-1], HumanMessage):
        reporter.user_message(label, messages[-1].text)


def _report_event(event: dict[str, Any], label: str, reporter: Reporter) -> None:
    """The nodes' progress events (see conversation/state.py and distill/state.py)."""
    kind = event.get("kind")
    if kind == "started":
        reporter.started(label, event["target_rounds"])
    elif kind == "user_message":
        reporter.user_message(label, event["text"])
    elif kind == "round_done":
        reporter.round_done(label, event["rounds"])
    elif kind == "topic_switch":
        reporter.topic_switch(label, event["reason"], event["to_topic"])
    elif kind == "stalled":
        reporter.note(f"{label}: stalled, ended early ({event.get('reason', 'no way out')})")
    elif kind == "chunks":
        reporter.distilling(label, event["chunks"])
    elif kind == "chunk_done":
        reporter.chunk_done(label)
