"""The distillation graph end to end against the fake OpenAI-compatible server."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypedDict

import pytest
from langgraph.graph import END, START, StateGraph

from graph_distill.context import DistillContext
from graph_distill.distill.graph import distill_graph
from graph_distill.distill.layout import render_summary, turn_label
from graph_distill.distill.notes import group_for_budget, merge_repeats, recover_citations
from graph_distill.distill.splitting import split_conversation
from graph_distill.distill.state import NOTE_SECTIONS, Notes
from graph_distill.llm.prompting import load_prompt
from graph_distill.llm.resources import RunResources, with_resources
from tests.support.fake_openai import FakeOpenAIServer

SHARED_INSIGHT = "Caching parsed templates avoids repeated disk reads"
KIND_MARKS = {
    kind: load_prompt(name).split("{")[0].splitlines()[0]
    for kind, name in [
        ("chunk", "distill_chunk"),
        ("collapse", "distill_collapse"),
        ("reduce", "distill_reduce"),
        ("repair", "repair_json"),
        ("raw_summary", "distill_raw_summary"),
    ]
}


# ---------------------------------------------------------------- helpers


def conversation(messages: int) -> list[dict[str, str]]:
    roles = ("user", "assistant")
    return [
        {
            "role": roles[turn % 2],
            "content": f"Message {turn} is about subject{turn}. "
            + "It adds a little detail to keep the message long enough. " * 4,
        }
        for turn in range(messages)
    ]


def context(server: FakeOpenAIServer, **settings: Any) -> DistillContext:
    defaults: dict[str, Any] = {
        "split_method": "turns",
        "max_turns": 4,
        "overlap_turns": 2,
        "max_retries": 0,
    }
    return DistillContext(
        base_url=server.base_url, api_key="test-key", model="fake-model", **{**defaults, **settings}
    )


def request_kind(body: dict[str, Any]) -> str:
    text = "\n".join(str(message.get("content")) for message in body["messages"])
    return next(kind for kind, mark in KIND_MARKS.items() if mark in text)


def kinds(server: FakeOpenAIServer) -> Counter[str]:
    return Counter(request_kind(body) for body in server.requests)


def last_text(body: dict[str, Any]) -> str:
    return str(body["messages"][-1]["content"])


def shown_turns(body: dict[str, Any]) -> list[int]:
    return [int(turn) for turn in re.findall(r"^\[turn (\d+)\]", last_text(body), re.MULTILINE)]


def notes_in(body: dict[str, Any]) -> list[dict[str, Any]]:
    decoder = json.JSONDecoder()
    text = last_text(body)
    return [decoder.raw_decode(text, m.end())[0] for m in re.finditer(r"Notes \d+ of \d+:\n", text)]


def item(text: str, turns: list[int]) -> dict[str, Any]:
    return {"text": text, "turns": turns}


def turn_item(turn: int) -> dict[str, Any]:
    return item(f"Point on subject{turn} and detail{turn}", [turn])


def chunk_notes(turns: list[int]) -> dict[str, Any]:
    """One item per shown message, plus an insight every chunk repeats."""
    return {
        "topic": f"Part from turn {turns[0]}",
        "core_questions": [turn_item(t) for t in turns if t % 2 == 0],
        "key_insights": [turn_item(t) for t in turns if t % 2 == 1]
        + [item(SHARED_INSIGHT, [turns[0]])],
        "important_conclusions": [],
    }


def union_without_turns(sources: list[dict[str, Any]]) -> dict[str, Any]:
    """What a merge might answer: every input item, but citations left out."""
    merged: dict[str, Any] = {"topic": "Merged topic"}
    for section in NOTE_SECTIONS:
        merged[section] = [item(i["text"], []) for s in sources for i in s[section]]
    return merged


def scripted(
    merge: Callable[[list[dict[str, Any]]], dict[str, Any]] = union_without_turns,
) -> Callable[[dict[str, Any]], str]:
    def respond(body: dict[str, Any]) -> str:
        if request_kind(body) == "chunk":
            return json.dumps(chunk_notes(shown_turns(body)))
        return json.dumps(merge(notes_in(body)))

    return respond


def all_items(notes: Notes) -> list[dict[str, Any]]:
    return [i for section in NOTE_SECTIONS for i in notes[section]]


async def distill(
    server: FakeOpenAIServer, messages: list[dict[str, str]], concurrency: int = 4, **settings: Any
) -> dict[str, Any]:
    return await distill_graph.ainvoke(
        {"conversation": messages},
        with_resources({"max_concurrency": concurrency}, RunResources()),
        context=context(server, **settings),
    )


# ---------------------------------------------------------------- the map


async def test_every_chunk_becomes_one_task_and_one_ordered_record() -> None:
    messages = conversation(18)
    chunks = split_conversation(messages, "turns", max_turns=4)
    assert len(chunks) == 8
    with FakeOpenAIServer() as server:
        tasks: Counter[str] = Counter()
        result: dict[str, Any] = {}
        async for update in distill_graph.astream(
            {"conversation": messages},
            {"max_concurrency": 4},
            context=context(server),
            stream_mode="updates",
        ):
            tasks.update(update.keys())
            result.update(update.get("reduce") or {})
        assert tasks["distill_chunk"] == len(chunks)
        assert kinds(server) == {"chunk": len(chunks), "reduce": 1}

    records = result["distilled_chunks"]
    assert [r["chunk_index"] for r in records] == list(range(len(chunks)))
    for record, chunk in zip(records, chunks, strict=True):
        assert record["status"] == "ok"
        assert "error" not in record
        assert record["turn_range"] == list(chunk.turn_range)
        assert record["original_messages"] == [
            {"role": m["role"], "content": m["content"]} for m in chunk.messages
        ]
        first, last = chunk.turn_range
        # The default responder cites random turns: those outside the chunk must go.
        assert all(first <= t <= last for i in all_items(record["notes"]) for t in i["turns"])
        assert record["distilled_content"].startswith("Conversation Topic: ")
        for header in ("Core Questions:\n- ", "Key Insights:\n- ", "Important Conclusions:\n- "):
            assert header in record["distilled_content"]
    assert result["final_summary"].startswith("Overall Conversation Topic: ")
    assert "\n\nMain Issues Discussed:\n1. " in result["final_summary"]
    assert "\n\nCore Insights and Conclusions:\n- " in result["final_summary"]


async def test_chunk_prompt_labels_every_message_with_its_turn() -> None:
    messages = conversation(6)
    with FakeOpenAIServer(responder=scripted()) as server:
        result = await distill(server, messages, max_turns=10)
        (request,) = server.requests
    assert shown_turns(request) == list(range(6))
    assert "subject5" in last_text(request)
    notes = result["distilled_chunks"][0]["notes"]
    assert notes["core_questions"][0] == {"text": "Point on subject0 and detail0", "turns": [0]}
    assert (
        "- Point on subject1 and detail1 (turn 1)"
        in result["distilled_chunks"][0]["distilled_content"]
    )


async def nodes_run(
    server: FakeOpenAIServer, messages: list[dict[str, str]], **settings: Any
) -> tuple[list[list[str]], dict[str, Any]]:
    """The nodes of each step, in order, and the graph's output."""
    steps: list[list[str]] = []
    result: dict[str, Any] = {}
    async for mode, chunk in distill_graph.astream(
        {"conversation": messages},
        with_resources({}, RunResources()),
        context=context(server, **settings),
        stream_mode=["updates", "values"],
    ):
        if mode == "updates":
            steps.append(sorted(chunk))
        else:
            result = chunk
    return steps, result


async def test_single_chunk_reuses_its_notes_without_a_reduce_call() -> None:
    with FakeOpenAIServer(responder=scripted()) as server:
        steps, result = await nodes_run(server, conversation(4), max_turns=10)
        assert kinds(server) == {"chunk": 1}
    assert steps == [["split"], ["distill_chunk"], ["reduce"]]  # no merge plan for one chunk
    assert result["final_notes"] == result["distilled_chunks"][0]["notes"]
    assert result["final_summary"] == render_summary(result["final_notes"])


@pytest.mark.parametrize("bound", ["max_concurrency", "distill_limit"])
async def test_the_bound_on_parallel_chunk_calls_holds(bound: str) -> None:
    """An embedding caller bounds the calls with LangGraph's max_concurrency; a runner with
    its resources' distill_limit (which does not hold back the saving of finished chunks)."""
    lock = threading.Lock()
    in_flight, peak = 0, 0
    respond = scripted()

    def slow(body: dict[str, Any]) -> str:
        nonlocal in_flight, peak
        with lock:
            in_flight += 1
            peak = max(peak, in_flight)
        time.sleep(0.1)
        with lock:
            in_flight -= 1
        return respond(body)

    with FakeOpenAIServer(responder=slow) as server:
        if bound == "max_concurrency":
            result = await distill(server, conversation(18), concurrency=3)
        else:
            result = await distill_graph.ainvoke(
                {"conversation": conversation(18)},
                with_resources({}, RunResources(distill_limit=3)),
                context=context(server),
            )
    assert len(result["distilled_chunks"]) == 8
    assert 2 <= peak <= 3


async def test_split_settings_errors_propagate() -> None:
    with FakeOpenAIServer() as server, pytest.raises(ValueError, match="split method"):
        await distill(server, conversation(4), split_method="sentences")


async def test_empty_conversation_gives_empty_results_without_calls() -> None:
    with FakeOpenAIServer() as server:
        steps, result = await nodes_run(server, [])
        assert server.calls == 0
    assert steps == [["split"], ["reduce"]]
    assert result["distilled_chunks"] == []
    assert result["final_summary"] == ""
    assert result["distill_usage"]["calls"] == 0


# ---------------------------------------------------------------- structured-output fallbacks


async def test_server_refusing_json_schema_gets_json_mode_after_one_refusal() -> None:
    with FakeOpenAIServer(refuse_json_schema=True) as server:
        result = await distill(server, conversation(10), concurrency=1)
        formats = [body.get("response_format", {}).get("type") for body in server.requests]
        assert server.fault_counts == {"400": 1}
        usage_calls = server.stats["calls"]
    assert formats[0] == "json_schema"
    assert formats[1:] == ["json_object"] * (len(formats) - 1)
    assert all(record["status"] == "ok" for record in result["distilled_chunks"])
    assert result["distill_usage"]["calls"] == usage_calls == len(formats) - 1


async def test_broken_json_gets_one_repair_call() -> None:
    with FakeOpenAIServer() as server:
        server.enqueue_fault("broken_json")
        result = await distill(server, conversation(10), concurrency=1)
        assert kinds(server) == {"chunk": 4, "repair": 1, "reduce": 1}
        repair = next(body for body in server.requests if request_kind(body) == "repair")
        assert server.records[0].fault == "broken_json"
    assert "```json\n{" in last_text(repair)
    assert "<<<\n{" in last_text(repair)
    assert all(record["status"] == "ok" for record in result["distilled_chunks"])


async def test_unusable_replies_keep_every_chunk_raw_and_the_summary_comes_from_the_text() -> None:
    refusal = "Sorry, I would rather not write JSON today."
    summary = "Overall Conversation Topic: subjects one to nine"

    def respond(body: dict[str, Any]) -> str:
        return summary if request_kind(body) == "raw_summary" else refusal

    with FakeOpenAIServer(responder=respond) as server:
        result = await distill(server, conversation(10))
        # One attempt and one repair per chunk; no notes to reduce: one summary of the text.
        assert kinds(server) == {"chunk": 4, "repair": 4, "raw_summary": 1}
        asked = next(b for b in server.requests if request_kind(b) == "raw_summary")
    assert "Message 9 is about subject9" in last_text(asked)
    records = result["distilled_chunks"]
    assert [r["chunk_index"] for r in records] == [0, 1, 2, 3]
    for record in records:
        assert record["status"] == "raw"
        assert record["distilled_content"] == refusal
        assert "JSON" in record["error"]
        assert record["original_messages"]
    assert result["final_summary"] == summary
    assert result["distill_usage"]["calls"] == 9


async def test_raw_chunks_stay_out_of_the_reduce() -> None:
    def respond(body: dict[str, Any]) -> str:
        if request_kind(body) == "repair":
            return "still no notes"
        if request_kind(body) == "chunk" and 0 in shown_turns(body):
            return "no notes here"
        return scripted()(body)

    with FakeOpenAIServer(responder=respond) as server:
        result = await distill(server, conversation(10))
        reduce_request = next(b for b in server.requests if request_kind(b) == "reduce")
    statuses = [record["status"] for record in result["distilled_chunks"]]
    assert statuses == ["raw", "ok", "ok", "ok"]
    assert [n["topic"] for n in notes_in(reduce_request)] == [
        "Part from turn 2",
        "Part from turn 4",
        "Part from turn 6",
    ]


# ---------------------------------------------------------------- the reduce


async def test_overlapping_chunks_repeat_items_that_are_merged_before_the_reduce() -> None:
    with FakeOpenAIServer(responder=scripted()) as server:
        result = await distill(server, conversation(10))
        reduce_request = next(b for b in server.requests if request_kind(b) == "reduce")
    sent = [i for notes in notes_in(reduce_request) for i in all_items(notes)]
    texts = Counter(i["text"] for i in sent)
    assert texts == {turn_item(t)["text"]: 1 for t in range(10)} | {SHARED_INSIGHT: 1}
    shared = next(i for i in sent if i["text"] == SHARED_INSIGHT)
    assert shared["turns"] == [0, 2, 4, 6]
    final = next(i for i in all_items(result["final_notes"]) if i["text"] == SHARED_INSIGHT)
    assert final["turns"] == [0, 2, 4, 6]


async def test_citations_survive_the_reduce() -> None:
    def merge(sources: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "topic": "Whole conversation",
            "core_questions": [item("Point on subject4 and detail4", [])],
            "key_insights": [item("Something nobody said", [999]), item(SHARED_INSIGHT, [2])],
            "important_conclusions": ["A bare string conclusion"],
        }

    with FakeOpenAIServer(responder=scripted(merge)) as server:
        result = await distill(server, conversation(10))
    final = result["final_notes"]
    all_turns = list(range(10))
    # Turns the distiller supplied are marked: taken from the matching source item, or all.
    assert final["core_questions"] == [
        {**item("Point on subject4 and detail4", [4]), "cited": "inherited"}
    ]
    assert final["key_insights"] == [
        {**item("Something nobody said", all_turns), "cited": "filled"},
        item(SHARED_INSIGHT, [2]),
    ]
    assert final["important_conclusions"] == [
        {**item("A bare string conclusion", all_turns), "cited": "filled"}
    ]
    assert "1. Point on subject4 and detail4 (turn 4)" in result["final_summary"]


async def test_tiny_notes_budget_collapses_recursively_and_keeps_citations() -> None:
    with FakeOpenAIServer(responder=scripted()) as server:
        result = await distill(server, conversation(18), notes_budget_tokens=1)
        collapse_sizes = [
            len(notes_in(b)) for b in server.requests if request_kind(b) == "collapse"
        ]
        # 8 chunk notes -> 4 groups of 2 -> 2 groups of 2 -> one reduce of 2.
        assert kinds(server) == {"chunk": 8, "collapse": 6, "reduce": 1}
        assert len(notes_in(next(b for b in server.requests if request_kind(b) == "reduce"))) == 2
    assert collapse_sizes == [2] * 6
    final = result["final_notes"]
    by_text = {i["text"]: i["turns"] for i in all_items(final)}
    assert by_text == {turn_item(t)["text"]: [t] for t in range(18)} | {
        SHARED_INSIGHT: [0, 2, 4, 6, 8, 10, 12, 14]
    }


async def test_usage_sums_every_call() -> None:
    with FakeOpenAIServer(responder=scripted()) as server:
        server.enqueue_fault("broken_json")
        result = await distill(server, conversation(18), notes_budget_tokens=1)
        stats = server.stats
        assert server.calls == 8 + 1 + 6 + 1
    assert result["distill_usage"] == {
        "input_tokens": stats["prompt_tokens"],
        "output_tokens": stats["completion_tokens"],
        "cached_tokens": stats["cached_tokens"],
        "calls": 16,
    }
    assert stats["cached_tokens"] > 0


# ---------------------------------------------------------------- embedding and defaults


async def test_context_defaults_to_environment_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # conftest clears every MIMO_* variable and runs the test in an empty directory.
    with FakeOpenAIServer(responder=scripted(), require_key="env-key") as server:
        monkeypatch.setenv("MIMO_BASE_URL", server.base_url)
        monkeypatch.setenv("MIMO_API_KEY", "env-key")
        result = await distill_graph.ainvoke({"conversation": conversation(4)})
        assert server.calls == 1
        assert server.requests[0]["model"] == "mimo-v2-flash"
    assert result["distilled_chunks"][0]["status"] == "ok"


class ParentState(TypedDict, total=False):
    title: str
    conversation: list[dict[str, str]]
    distilled_chunks: list[dict[str, Any]]
    final_summary: str
    final_notes: dict[str, Any]
    distill_usage: dict[str, int]
    report: str


def load_conversation(state: ParentState) -> dict[str, Any]:
    return {"conversation": conversation(10)}


def write_report(state: ParentState) -> dict[str, Any]:
    chunks = len(state["distilled_chunks"])
    return {"report": f"{state['title']}: {chunks} chunks, {state['distill_usage']['calls']} calls"}


async def test_embeds_as_a_node_of_a_parent_graph() -> None:
    parent = StateGraph(ParentState, context_schema=DistillContext)
    parent.add_node("load", load_conversation)
    parent.add_node("distill", distill_graph)
    parent.add_node("report", write_report)
    parent.add_edge(START, "load")
    parent.add_edge("load", "distill")
    parent.add_edge("distill", "report")
    parent.add_edge("report", END)
    with FakeOpenAIServer(responder=scripted()) as server:
        result = await parent.compile().ainvoke({"title": "Caching"}, context=context(server))
    assert result["title"] == "Caching"
    assert result["report"] == "Caching: 4 chunks, 5 calls"
    assert result["final_summary"].startswith("Overall Conversation Topic: Merged topic")


# ---------------------------------------------------------------- pure helpers


def notes(**sections: list[dict[str, Any]]) -> Notes:
    return Notes(
        topic="t",
        core_questions=sections.get("core_questions", []),
        key_insights=sections.get("key_insights", []),
        important_conclusions=sections.get("important_conclusions", []),
    )


def test_merge_repeats_unites_near_duplicates_of_the_same_section() -> None:
    first = notes(key_insights=[item("Use an LRU cache for parsed templates.", [1])])
    second = notes(
        key_insights=[
            item("use an LRU cache for the parsed templates", [5, 6]),
            item("Profile before optimising anything", [7]),
        ],
        important_conclusions=[item("Use an LRU cache for parsed templates.", [8])],
    )
    merged = merge_repeats([first, second])
    assert merged[0]["key_insights"] == [item("Use an LRU cache for parsed templates.", [1, 5, 6])]
    assert merged[1]["key_insights"] == [item("Profile before optimising anything", [7])]
    assert merged[1]["important_conclusions"] == [
        item("Use an LRU cache for parsed templates.", [8])
    ]
    assert first["key_insights"][0]["turns"] == [1]


def test_recover_citations_prefers_the_closest_source_items() -> None:
    sources = [
        notes(key_insights=[item("Alpha beta gamma delta", [1]), item("Epsilon zeta eta", [2])]),
        notes(key_insights=[item("Theta iota kappa", [3])]),
    ]
    merged = notes(
        key_insights=[
            item("Alpha beta gamma delta and also theta iota kappa", []),
            item("Epsilon zeta eta", [2, 40]),
            item("Unrelated words entirely", []),
        ]
    )
    assert recover_citations(merged, sources)["key_insights"] == [
        {**item("Alpha beta gamma delta and also theta iota kappa", [1, 3]), "cited": "inherited"},
        item("Epsilon zeta eta", [2]),
        {**item("Unrelated words entirely", [1, 2, 3]), "cited": "filled"},
    ]


def test_groups_fit_the_budget_with_at_least_two_notes_each() -> None:
    level = [notes(key_insights=[item(f"insight {n}", [n])]) for n in range(5)]
    assert group_for_budget(level, 10_000) == [level]
    assert [len(g) for g in group_for_budget(level, 1)] == [2, 3]
    assert [len(g) for g in group_for_budget(level[:2], 1)] == [2]


def test_turn_labels_compress_runs() -> None:
    assert turn_label([4]) == "turn 4"
    assert turn_label([5, 3, 4, 9]) == "turns 3-5, 9"
