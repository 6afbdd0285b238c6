"""The judge: a model checks each note item against the turns it cites, one call per chunk
(its model-cited items together). Estimated before it starts, counted as it goes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from graph_distill.context import DistillContext
from graph_distill.distill.notes import model_cited
from graph_distill.llm.models import chat_model
from graph_distill.llm.prompting import render_prompt
from graph_distill.llm.resources import RunResources
from graph_distill.llm.structured import OutputSpec, ainvoke_structured
from graph_distill.llm.tokens import count_tokens
from graph_distill.llm.usage import Usage, add_usage, empty_usage
from graph_distill.report.citations import note_items
from graph_distill.report.dataset import Conversation
from graph_distill.report.stats import share

VERDICTS_SCHEMA = {
    "type": "object",
    "properties": {
        "verdicts": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"item": {"type": "integer"}, "supported": {"type": "boolean"}},
                "required": ["item", "supported"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["verdicts"],
    "additionalProperties": False,
}
VERDICTS_SPEC = OutputSpec(name="note_verdicts", schema=VERDICTS_SCHEMA)
_SCHEMA_TEXT = json.dumps(VERDICTS_SCHEMA, indent=2)
# Estimate of a reply: the JSON frame plus one verdict object per item.
REPLY_TOKENS = 10
TOKENS_PER_VERDICT = 12
# Chat framing per message, as the splitter counts it.
MESSAGE_OVERHEAD_TOKENS = 4
JUDGE_MAX_OUTPUT_TOKENS = 2000

CostOf = Callable[[Mapping[str, int]], float]


@dataclass(frozen=True)
class JudgeTask:
    """One chunk's model-cited items with the turns they cite."""

    key: str
    chunk_index: int
    items: list[tuple[str, list[int]]]
    turns: dict[int, tuple[str, str]]

    def prompt(self) -> list[BaseMessage]:
        cited = "\n\n".join(
            f"[turn {turn}] {role}:\n{text}" for turn, (role, text) in sorted(self.turns.items())
        )
        listing = "\n".join(
            f"{number}. {text} (cites turns {', '.join(map(str, turns))})"
            for number, (text, turns) in enumerate(self.items, start=1)
        )
        return [
            SystemMessage(render_prompt("judge_notes", schema=_SCHEMA_TEXT)),
            HumanMessage(f"Cited messages:\n\n{cited}\n\nNote items:\n{listing}"),
        ]


def judge_tasks(conversations: Iterable[Conversation]) -> list[JudgeTask]:
    """A task per distilled chunk with model-cited items whose turns exist."""
    tasks = []
    for conversation in conversations:
        messages = conversation.messages
        for chunk in (conversation.distilled or {}).get("distilled_chunks") or []:
            items = [
                (str(item.get("text") or ""), [t for t in item["turns"] if 0 <= t < len(messages)])
                for item in note_items(chunk.get("notes"))
                if model_cited(item) and item.get("turns")
            ]
            items = [(text, turns) for text, turns in items if turns]
            if items:
                cited = {t for _, turns in items for t in turns}
                turns = {t: (messages[t]["role"], messages[t]["content"]) for t in cited}
                tasks.append(
                    JudgeTask(conversation.key, int(chunk.get("chunk_index", 0)), items, turns)
                )
    return tasks


def estimate(tasks: Iterable[JudgeTask], cost_of: CostOf) -> dict[str, Any]:
    """Calls, tokens and cost the judge will take (input counted exactly, output guessed)."""
    usage = empty_usage()
    for task in tasks:
        prompt_tokens = sum(count_tokens(m.text) + MESSAGE_OVERHEAD_TOKENS for m in task.prompt())
        output = REPLY_TOKENS + TOKENS_PER_VERDICT * len(task.items)
        usage = add_usage(
            usage, Usage(input_tokens=prompt_tokens, output_tokens=output, cached_tokens=0, calls=1)
        )
    return {**usage, "cost_usd": round(cost_of(usage), 6)}


async def run_judge(
    tasks: list[JudgeTask],
    ctx: DistillContext,
    cost_of: CostOf,
    *,
    concurrency: int = 4,
) -> dict[str, Any]:
    """Every task judged (``concurrency`` calls at once); the figures of the report's judge."""
    async with RunResources(ctx.requests_per_minute, stock=ctx.stock) as resources:
        model = chat_model(
            ctx, "distill", temperature=0.0, max_tokens=JUDGE_MAX_OUTPUT_TOKENS, resources=resources
        )
        gate = asyncio.Semaphore(concurrency)

        async def one(task: JudgeTask) -> tuple[JudgeTask, list[bool] | None, Usage]:
            async with gate:
                reply = await ainvoke_structured(
                    model, task.prompt(), VERDICTS_SPEC, resources.levels
                )
            return task, _verdicts(reply.value, len(task.items)), reply.usage

        results = await asyncio.gather(*(one(task) for task in tasks))
    return _figures(results, estimate(tasks, cost_of), cost_of)


def _verdicts(value: dict[str, Any] | None, count: int) -> list[bool] | None:
    """One verdict per item, by item number; None when the reply gave no usable verdicts."""
    if not value:
        return None
    by_number = {
        v["item"]: bool(v["supported"]) for v in value.get("verdicts") or [] if isinstance(v, dict)
    }
    if not any(1 <= number <= count for number in by_number):
        return None
    return [by_number.get(number, False) for number in range(1, count + 1)]


def _figures(
    results: list[tuple[JudgeTask, list[bool] | None, Usage]],
    planned: dict[str, Any],
    cost_of: CostOf,
) -> dict[str, Any]:
    usage = empty_usage()
    per_file: dict[str, list[int]] = {}
    unanswered = 0
    for task, verdicts, call_usage in results:
        usage = add_usage(usage, call_usage)
        if verdicts is None:
            unanswered += 1
            continue
        counts = per_file.setdefault(task.key, [0, 0])
        counts[0] += len(verdicts)
        counts[1] += sum(verdicts)
    items = sum(c[0] for c in per_file.values())
    supported = sum(c[1] for c in per_file.values())
    return {
        "items": items,
        "supported": supported,
        "supported_share": share(supported, items),
        "unanswered_calls": unanswered,
        "files": [
            {"key": key, "items": n, "supported": s, "share": share(s, n)}
            for key, (n, s) in per_file.items()
        ],
        "estimate": planned,
        "usage": usage,
        "cost_usd": round(cost_of(usage), 6),
    }
