"""The fake OpenAI server, driven through the real openai and langchain-openai clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, Literal

import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.output_parsers import PydanticOutputParser
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, Field

from graph_distill.conversation.stagnation import similarity
from tests.support.fake_openai import (
    CACHE_BLOCK_TOKENS,
    DefaultResponder,
    FakeOpenAIServer,
    FaultRates,
)

LONG_SYSTEM = "You are a patient tutor who explains things step by step. " * 40


class Insight(BaseModel):
    claim: str
    confidence: int = Field(ge=1, le=5)
    tags: list[str] = Field(min_length=1, max_length=3)


class Notes(BaseModel):
    topic: str
    mood: Literal["calm", "tense"]
    insights: list[Insight]
    summary: str | None = None


@pytest.fixture
def srv() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def chat(server: FakeOpenAIServer, **kwargs: Any) -> ChatOpenAI:
    kwargs.setdefault("max_retries", 2)
    return ChatOpenAI(base_url=server.base_url, api_key="k", model="m", **kwargs)


def raw_client(server: FakeOpenAIServer, key: str = "k") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def ask(client: openai.OpenAI, text: str = "hi", **kwargs: Any) -> str | None:
    messages = [{"role": "user", "content": text}]
    reply = client.chat.completions.create(model="m", messages=messages, **kwargs)
    return reply.choices[0].message.content


def test_plain_reply_reports_usage_and_cached_prefix(srv: FakeOpenAIServer) -> None:
    llm = chat(srv)
    first = llm.invoke([("system", LONG_SYSTEM), ("user", "What is a derivative?")])
    second = llm.invoke([("system", LONG_SYSTEM), ("user", "And an integral, roughly?")])

    assert first.content and second.content and first.content != second.content
    assert first.usage_metadata is not None and second.usage_metadata is not None
    assert first.usage_metadata["input_token_details"]["cache_read"] == 0
    cached = second.usage_metadata["input_token_details"]["cache_read"]
    assert cached >= 6 * CACHE_BLOCK_TOKENS and cached % CACHE_BLOCK_TOKENS == 0
    assert cached < second.usage_metadata["input_tokens"]
    assert first.usage_metadata["output_tokens"] > 0
    assert srv.stats == {
        "prompt_tokens": first.usage_metadata["input_tokens"]
        + second.usage_metadata["input_tokens"],
        "cached_tokens": cached,
        "completion_tokens": first.usage_metadata["output_tokens"]
        + second.usage_metadata["output_tokens"],
        "calls": 2,
    }


def test_prefix_cache_can_be_disabled() -> None:
    with FakeOpenAIServer(prefix_cache=False) as server:
        llm = chat(server)
        replies = [llm.invoke([("system", LONG_SYSTEM), ("user", "same")]) for _ in range(2)]
    assert [r.usage_metadata["input_token_details"]["cache_read"] for r in replies] == [0, 0]


def test_stream_delivers_chunks_and_final_usage(srv: FakeOpenAIServer) -> None:
    chunks = list(chat(srv, stream_usage=True).stream("Tell me about tides"))

    text = "".join(str(chunk.content) for chunk in chunks)
    assert len([chunk for chunk in chunks if chunk.content]) >= 3
    assert text.startswith("Reply 1") and "Tell me about tides" in text
    with_usage = [i for i, chunk in enumerate(chunks) if chunk.usage_metadata]
    last_text = max(i for i, chunk in enumerate(chunks) if chunk.content)
    assert len(with_usage) == 1 and with_usage[0] > last_text
    assert chunks[with_usage[0]].usage_metadata["output_tokens"] > 0
    assert srv.requests[0]["stream_options"] == {"include_usage": True}


def test_stream_wire_format_ends_with_usage_then_done(srv: FakeOpenAIServer) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    request = urllib.request.Request(
        f"{srv.base_url}/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        events = [line for line in response.read().decode().split("\n\n") if line]

    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    usage_chunk = json.loads(events[-2].removeprefix("data: "))
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["total_tokens"] > 0
    finish = json.loads(events[-3].removeprefix("data: "))
    assert finish["choices"][0]["finish_reason"] == "stop"


def test_401_raises_without_retry(srv: FakeOpenAIServer) -> None:
    srv.enqueue_fault("401")
    with pytest.raises(openai.AuthenticationError):
        chat(srv).invoke("hi")
    assert srv.calls == 1
    assert srv.fault_counts == {"401": 1}


def test_required_key_is_checked_and_headers_recorded() -> None:
    with FakeOpenAIServer(require_key="secret") as server:
        with pytest.raises(openai.AuthenticationError):
            ask(raw_client(server, key="wrong"))
        assert ask(raw_client(server, key="secret"))
        with pytest.raises(openai.AuthenticationError):
            raw_client(server, key="wrong").models.list()
    assert [h["authorization"] for h in server.request_headers] == [
        "Bearer wrong",
        "Bearer secret",
    ]


def test_429_is_retried_after_the_requested_delay(srv: FakeOpenAIServer) -> None:
    # Longer than the client's own first backoff (at most 0.5 s), so only Retry-After explains it.
    srv.enqueue_fault("429", retry_after=0.7)
    reply = chat(srv).invoke("hi")

    assert reply.content
    assert srv.calls == 2
    first, second = srv.records
    assert second.received_at - first.received_at >= 0.7 - 0.02
    assert (first.fault, second.fault) == ("429", None)
    assert srv.retry_after_total == pytest.approx(0.7)


def test_500_is_retried(srv: FakeOpenAIServer) -> None:
    srv.enqueue_fault("500")
    assert chat(srv).invoke("hi").content
    assert srv.calls == 2
    assert srv.fault_counts == {"500": 1}


def test_dropped_stream_raises_in_the_client(srv: FakeOpenAIServer) -> None:
    srv.enqueue_fault("drop", after_chunks=2)
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in chat(srv).stream("Tell me a long story about harbors"):
            received.append(str(chunk.content))
    assert "".join(received).startswith("Reply")
    assert srv.calls == 1


def test_dropped_plain_request_is_retried_as_a_connection_error(srv: FakeOpenAIServer) -> None:
    srv.enqueue_fault("drop")
    assert chat(srv).invoke("hi").content
    assert srv.calls == 2


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_returns_a_valid_object(srv: FakeOpenAIServer, method: str) -> None:
    notes = chat(srv).with_structured_output(Notes, method=method).invoke("Summarise this")

    assert isinstance(notes, Notes) and notes.insights and notes.topic
    sent = srv.requests[0]
    if method == "json_schema":
        assert sent["response_format"]["type"] == "json_schema"
    else:
        assert sent["tools"][0]["function"]["name"] == "Notes"


def test_tool_call_then_text_after_the_tool_result(srv: FakeOpenAIServer) -> None:
    llm = chat(srv).bind_tools([Notes])
    call = llm.invoke("Take notes").tool_calls[0]
    Notes.model_validate(call["args"])

    history = [
        HumanMessage("Take notes"),
        AIMessage("", tool_calls=[call]),
        ToolMessage("saved", tool_call_id=call["id"]),
    ]
    final = llm.invoke(history)
    assert not final.tool_calls and final.content


def test_json_object_mode_fills_the_schema_from_format_instructions(
    srv: FakeOpenAIServer,
) -> None:
    instructions = PydanticOutputParser(pydantic_object=Notes).get_format_instructions()
    prompt = f"Summarise this.\n{instructions}"
    notes = chat(srv).with_structured_output(Notes, method="json_mode").invoke(prompt)
    assert isinstance(notes, Notes)
    assert srv.requests[0]["response_format"] == {"type": "json_object"}


def test_refuse_json_schema_answers_400_but_serves_plain_requests() -> None:
    with FakeOpenAIServer(refuse_json_schema=True) as server:
        llm = chat(server)
        with pytest.raises(openai.BadRequestError, match="json_schema"):
            llm.with_structured_output(Notes, method="json_schema").invoke("Summarise")
        assert llm.invoke("hi").content
    assert server.calls == 2
    assert server.fault_counts == {"400": 1}


def test_refuse_tools_answers_400() -> None:
    with FakeOpenAIServer(refuse_tools=True) as server:
        structured = chat(server).with_structured_output(Notes, method="function_calling")
        with pytest.raises(openai.BadRequestError, match="tools"):
            structured.invoke("Summarise")
    assert server.calls == 1


def test_broken_json_and_empty_replies(srv: FakeOpenAIServer) -> None:
    client = raw_client(srv)
    srv.enqueue_fault("broken_json")
    srv.enqueue_fault("empty")
    broken = ask(client, response_format={"type": "json_object"})
    empty = ask(client)
    whole = ask(client, response_format={"type": "json_object"})

    assert broken
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken)
    assert empty == ""
    assert isinstance(json.loads(whole or ""), dict)
    assert srv.fault_counts == {"broken_json": 1, "empty": 1}


@pytest.mark.parametrize("streaming", [False, True])
def test_honor_max_tokens_cuts_long_replies_with_finish_reason_length(streaming: bool) -> None:
    long_text = "One two three four five six seven eight nine ten. " * 5
    with FakeOpenAIServer(lambda body: long_text, honor_max_tokens=True) as server:
        cut = chat(server, max_tokens=7, streaming=streaming, stream_usage=True).invoke("hi")
        whole = chat(server, max_tokens=100, streaming=streaming).invoke("hi")
        unlimited = chat(server, streaming=streaming).invoke("hi")
    assert cut.text == "One two three four five six seven"
    assert cut.response_metadata["finish_reason"] == "length"
    assert cut.usage_metadata and cut.usage_metadata["output_tokens"] == 7
    for reply in (whole, unlimited):
        assert reply.text == long_text
        assert reply.response_metadata["finish_reason"] == "stop"


def test_extra_body_and_model_list_reach_the_server(srv: FakeOpenAIServer) -> None:
    chat(srv, extra_body={"thinking": {"type": "disabled"}}).invoke("hi")
    models = raw_client(srv).models.list()

    assert srv.requests[0]["thinking"] == {"type": "disabled"}
    assert srv.requests[0]["model"] == "m"
    assert [model.id for model in models.data] == ["fake-model"]


async def test_concurrent_requests_are_served_in_parallel() -> None:
    with FakeOpenAIServer(latency=0.2) as server:
        llm = chat(server, max_retries=0)
        await llm.ainvoke("warm up")
        started = time.monotonic()
        replies = await asyncio.gather(*(llm.ainvoke(f"question {i}") for i in range(16)))
        elapsed = time.monotonic() - started
    assert len({reply.content for reply in replies}) == 16
    assert elapsed < 2.4


def fault_sequence(rates: FaultRates, calls: int = 30) -> list[str | None]:
    with FakeOpenAIServer(faults=rates) as server:
        client = raw_client(server)
        for _ in range(calls):
            with contextlib.suppress(openai.APIError):
                ask(client, response_format={"type": "json_object"})
    return [record.fault for record in server.records]


def test_fault_rates_are_seeded_and_deterministic() -> None:
    rates = FaultRates(rate_429=0.2, rate_500=0.2, rate_drop=0.1, rate_broken_json=0.2, seed=7)
    sequence = fault_sequence(rates)

    assert sequence == fault_sequence(rates)
    assert sequence != fault_sequence(FaultRates(**{**rates.__dict__, "seed": 8}))
    assert {"429", "500", "broken_json", None} <= set(sequence)


def test_invalid_fault_settings_are_rejected(srv: FakeOpenAIServer) -> None:
    with pytest.raises(ValueError):
        srv.enqueue_fault("418")
    with pytest.raises(ValueError):
        FaultRates(rate_429=0.7, rate_500=0.7)


def test_stop_is_prompt_with_a_stream_in_flight() -> None:
    server = FakeOpenAIServer(chunk_delay=2.0).start()
    outcome: list[str] = []

    def consume() -> None:
        try:
            stream = raw_client(server).chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            for _ in stream:
                pass
            outcome.append("finished")
        except openai.APIError as error:
            outcome.append(type(error).__name__)

    consumer = threading.Thread(target=consume)
    consumer.start()
    while server.calls == 0:
        time.sleep(0.01)
    server.stop()
    consumer.join(timeout=10)
    assert not consumer.is_alive()
    assert outcome == ["APIConnectionError"]


def test_default_replies_never_stagnate() -> None:
    responder = DefaultResponder()
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "Let us plan a garden"}]}
    replies = []
    for _ in range(30):
        replies.append(responder(body))
        body = {"messages": [{"role": "user", "content": replies[-1]}]}
    assert len(set(replies)) == len(replies)
    assert "Let us plan a garden" in replies[0]
    assert max(similarity(a, b) for i, a in enumerate(replies) for b in replies[:i]) < 0.5


def test_default_schema_instances_fit_nested_schemas() -> None:
    responder = DefaultResponder(seed=3)
    schema = Notes.model_json_schema()
    body = {
        "messages": [{"role": "user", "content": "notes please"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
    }
    for _ in range(20):
        Notes.model_validate_json(responder(body))
