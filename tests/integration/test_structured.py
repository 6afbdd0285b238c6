"""The structured-output cascade: json_schema, JSON mode, plain prompt, tolerant parse, repair."""

from __future__ import annotations

import itertools
import json
import threading
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import pytest
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from graph_distill.context import DistillContext
from graph_distill.llm.models import chat_model
from graph_distill.llm.prompting import load_prompt
from graph_distill.llm.resources import RunResources
from graph_distill.llm.structured import (
    Level,
    LevelMemory,
    OutputSpec,
    ainvoke_structured,
    bounded_schema,
    coerce_to_schema,
    json_values,
    parse_structured,
)
from tests.support.fake_openai import FakeOpenAIServer, FaultRates

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "points": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "turns": {"type": "array", "items": {"type": "integer"}},
                },
                "required": ["text", "turns"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["title", "points"],
    "additionalProperties": False,
}
SPEC = OutputSpec(name="points", schema=SCHEMA)
MESSAGES: list[BaseMessage] = [
    SystemMessage(
        f"Reply with one JSON object following this schema:\n```json\n{json.dumps(SCHEMA)}\n```"
    ),
    HumanMessage("Summarise: the cache keeps parsed templates."),
]
REPAIR_MARK = load_prompt("repair_json").split("{")[0]


def model_for(
    base_url: str, resources: RunResources | None = None, max_retries: int = 0
) -> ChatOpenAI:
    ctx = DistillContext(
        base_url=base_url, api_key="test-key", model="fake-model", max_retries=max_retries
    )
    resources = resources or RunResources()
    return chat_model(ctx, "distill", temperature=0.0, max_tokens=300, resources=resources)


# Each model's run memory of levels, as a run's resources hold it.
_LEVELS: dict[int, tuple[ChatOpenAI, LevelMemory]] = {}


def levels_for(model: ChatOpenAI) -> LevelMemory:
    held = _LEVELS.get(id(model))
    if held is None or held[0] is not model:
        held = _LEVELS[id(model)] = (model, LevelMemory())
    return held[1]


def ask(model: ChatOpenAI) -> Any:
    return ainvoke_structured(model, MESSAGES, SPEC, levels_for(model))


def working_level(model: ChatOpenAI) -> Level:
    return levels_for(model).working_level(model)


def formats(bodies: list[dict[str, Any]]) -> list[str | None]:
    return [(body.get("response_format") or {}).get("type") for body in bodies]


class RefusingProxy:
    """Stands in for a server that takes no ``response_format`` (or nothing at all): answers
    those requests 400 itself and forwards the rest to a fake server."""

    def __init__(self, target: FakeOpenAIServer, refuses: Callable[[dict[str, Any]], bool]) -> None:
        self.bodies: list[dict[str, Any]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                body = json.loads(raw)
                proxy.bodies.append(body)
                if refuses(body):
                    status, data = 400, json.dumps({"error": {"message": "not supported"}}).encode()
                else:
                    forwarded = urllib.request.Request(
                        f"{target.base_url}/chat/completions",
                        data=raw,
                        headers={"Content-Type": "application/json"},
                    )
                    with urllib.request.urlopen(forwarded) as response:
                        status, data = response.status, response.read()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http.server_address[1]}/v1"

    def __enter__(self) -> RefusingProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.http.shutdown()
        self.http.server_close()


# ---------------------------------------------------------------- tolerant parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('Sure! Here it is: {"a": [1, 2,],} Hope it helps.', {"a": [1, 2]}),
        ("{'a': 'x', 'b': None, 'c': True}", {"a": "x", "b": None, "c": True}),
        ('Braces {like these} first, then {"a": "}"}', {"a": "}"}),
        ('[{"a": 1}]', [{"a": 1}]),
        # as the embedded SmolLM2 wrote it: a raw line break inside a string
        (
            '{ "topic" : "how we share our stories\n" ,"core_questions":[] }',
            {"topic": "how we share our stories\n", "core_questions": []},
        ),
    ],
)
def test_json_values_forgive_common_slips(text: str, expected: Any) -> None:
    assert next(iter(json_values(text))) == expected


@pytest.mark.parametrize("text", ["no JSON here", '{"a": [1, 2', ""])
def test_text_without_a_complete_json_value_has_none(text: str) -> None:
    assert list(json_values(text)) == []


def test_coerce_bends_wrong_types_to_the_schema() -> None:
    value = {
        "Title": 42,
        "points": [
            "a plain string",
            {"text": " spaced ", "turns": "3, 4"},
            {"Text": "typed", "turns": ["5", 6.0, True, "n/a", 7]},
            {"text": "single", "turns": 8},
        ],
        "unknown": 1,
    }
    assert coerce_to_schema(value, SCHEMA) == {
        "title": "42",
        "points": [
            {"text": "a plain string", "turns": []},
            {"text": "spaced", "turns": [3, 4]},
            {"text": "typed", "turns": [5, 6, 7]},
            {"text": "single", "turns": [8]},
        ],
    }


def test_coerce_fills_missing_keys_and_wraps_lone_values() -> None:
    assert coerce_to_schema({"points": {"text": "solo"}}, SCHEMA) == {
        "title": "",
        "points": [{"text": "solo", "turns": []}],
    }
    assert coerce_to_schema({"title": None, "points": None}, SCHEMA) == {"title": "", "points": []}


def test_parse_structured_takes_the_first_object_with_known_fields() -> None:
    text = 'Example: {"x": 1}. Answer: {"title": "t", "points": []}'
    assert parse_structured(text, SCHEMA) == {"title": "t", "points": []}
    with pytest.raises(ValueError, match="none of the expected fields"):
        parse_structured('{"x": 1}', SCHEMA)
    with pytest.raises(ValueError, match="no JSON"):
        parse_structured("prose only", SCHEMA)


# ---------------------------------------------------------------- the cascade


async def test_json_schema_is_used_when_the_server_takes_it() -> None:
    with FakeOpenAIServer() as server:
        reply = await ask(model_for(server.base_url))
        (body,) = server.requests
        stats = server.stats
    assert reply.level is Level.JSON_SCHEMA
    assert reply.error is None
    assert set(reply.value or {}) == {"title", "points"}
    assert body["response_format"]["type"] == "json_schema"
    assert body["response_format"]["json_schema"]["strict"] is True
    assert body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert reply.usage == {
        "input_tokens": stats["prompt_tokens"],
        "output_tokens": stats["completion_tokens"],
        "cached_tokens": 0,
        "calls": 1,
    }


async def test_refused_json_schema_falls_back_to_json_mode_and_is_remembered() -> None:
    with FakeOpenAIServer(refuse_json_schema=True) as server:
        model = model_for(server.base_url)
        first = await ask(model)
        second = await ask(model)
        assert formats(server.requests) == ["json_schema", "json_object", "json_object"]
    assert first.level is second.level is Level.JSON_OBJECT_SCHEMA
    sent = server.requests[1]["response_format"]["schema"]
    assert sent == bounded_schema(SCHEMA) and sent != SCHEMA
    assert first.value is not None and second.value is not None
    assert first.usage["calls"] == second.usage["calls"] == 1
    assert working_level(model) is Level.JSON_OBJECT_SCHEMA
    # The level is the run's: another run starts from the top again.
    assert working_level(model_for(model.openai_api_base, RunResources())) is Level.JSON_SCHEMA


async def test_broken_json_gets_one_repair_call_at_the_same_level() -> None:
    with FakeOpenAIServer() as server:
        server.enqueue_fault("broken_json")
        reply = await ask(model_for(server.base_url))
        broken, repair = server.requests
        stats = server.stats
    assert reply.value is not None
    assert formats([broken, repair]) == ["json_schema", "json_schema"]
    (repair_message,) = repair["messages"]
    assert repair_message["content"].startswith(REPAIR_MARK)
    assert '"title"' in repair_message["content"]
    assert reply.usage["calls"] == stats["calls"] == 2
    assert reply.usage["output_tokens"] == stats["completion_tokens"]


async def test_an_empty_reply_repeats_the_request() -> None:
    with FakeOpenAIServer() as server:
        server.enqueue_fault("empty")
        reply = await ask(model_for(server.base_url))
        first, second = server.requests
    assert reply.value is not None
    assert first["messages"] == second["messages"]


async def test_unusable_replies_end_as_a_failed_reply_with_the_raw_text() -> None:
    with FakeOpenAIServer(responder=lambda body: "I'd rather chat.") as server:
        reply = await ask(model_for(server.base_url))
        assert server.calls == 2
    assert reply.value is None
    assert reply.text == "I'd rather chat."
    assert reply.error is not None and "no usable JSON" in reply.error
    assert reply.usage["calls"] == 2


async def test_plain_prompt_with_tolerant_parse_when_no_response_format_is_taken() -> None:
    answer = (
        'Here you go:\n```json\n{"title": "t", "points": [{"text": "a", "turns": ["1"]},],}\n```'
    )
    with FakeOpenAIServer(responder=lambda body: answer) as server:
        with RefusingProxy(server, lambda body: "response_format" in body) as proxy:
            model = model_for(proxy.base_url)
            reply = await ask(model)
            again = await ask(model)
        assert formats(proxy.bodies) == ["json_schema", "json_object", "json_object", None, None]
        assert server.calls == 2
    assert reply.level is again.level is Level.PROMPT
    assert reply.value == {"title": "t", "points": [{"text": "a", "turns": [1]}]}
    assert reply.usage["calls"] == 1


async def test_a_server_refusing_everything_gives_a_failed_reply() -> None:
    with FakeOpenAIServer() as server, RefusingProxy(server, lambda body: True) as proxy:
        reply = await ask(model_for(proxy.base_url))
        assert server.calls == 0
    assert reply.value is None
    assert reply.level is None
    assert reply.error is not None and "refused every structured-output method" in reply.error
    assert reply.usage["calls"] == 0
    assert working_level(model_for(proxy.base_url)) is Level.JSON_SCHEMA


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", openai.InternalServerError),
        ("429", openai.RateLimitError),
        ("401", openai.AuthenticationError),
    ],
)
async def test_transient_and_auth_errors_propagate(fault: str, error: type[Exception]) -> None:
    with FakeOpenAIServer() as server:
        server.enqueue_fault(fault, retry_after=0)
        model = model_for(server.base_url)
        with pytest.raises(error):
            await ask(model)
    assert working_level(model) is Level.JSON_SCHEMA


@pytest.mark.parametrize("fault", ["500", "drop", "broken_json"])
async def test_a_transient_failure_is_retried_at_the_same_level(fault: str) -> None:
    with FakeOpenAIServer() as server:
        server.enqueue_fault(fault)
        model = model_for(server.base_url, RunResources(), max_retries=3)
        reply = await ask(model)
        requests = server.records
    assert [record.fault for record in requests] == [fault, None]
    assert formats([record.body for record in requests]) == ["json_schema", "json_schema"]
    assert reply.level is Level.JSON_SCHEMA and reply.value is not None
    assert working_level(model) is Level.JSON_SCHEMA


async def test_a_failing_server_gets_at_most_four_requests_and_keeps_its_level() -> None:
    with FakeOpenAIServer(faults=FaultRates(rate_429=1.0, retry_after=0.05)) as server:
        model = model_for(server.base_url, RunResources(), max_retries=3)
        with pytest.raises(openai.RateLimitError):
            await ask(model)
        requests = server.records
    assert len(requests) == 4
    assert formats([record.body for record in requests]) == ["json_schema"] * 4
    gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(requests)]
    assert min(gaps) >= 0.045  # Retry-After honoured
    assert working_level(model) is Level.JSON_SCHEMA


async def test_the_models_own_extra_body_is_kept_next_to_the_response_format() -> None:
    with FakeOpenAIServer() as server:
        thinking = {"thinking": {"type": "disabled"}}  # what chat_model adds for MiMo
        model = model_for(server.base_url).model_copy(update={"extra_body": thinking})
        reply = await ask(model)
        (body,) = server.requests
    assert reply.value is not None
    assert body["thinking"] == {"type": "disabled"}
    assert body["response_format"]["type"] == "json_schema"


async def test_json_mode_without_schema_when_the_schema_extension_is_refused() -> None:
    def refused(body: dict) -> bool:
        response_format = body.get("response_format") or {}
        return response_format.get("type") == "json_schema" or "schema" in response_format

    with FakeOpenAIServer() as server, RefusingProxy(server, refused) as proxy:
        model = model_for(proxy.base_url)
        reply = await ask(model)
        assert formats(proxy.bodies) == ["json_schema", "json_object", "json_object"]
        assert "schema" not in proxy.bodies[-1]["response_format"]
    assert reply.level is Level.JSON_MODE and reply.value is not None
    assert working_level(model) is Level.JSON_MODE


def test_bounded_schema_caps_every_string_and_array() -> None:
    bounded = bounded_schema(SCHEMA)
    strings, arrays = [], []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "string":
                strings.append(node)
            if node.get("type") == "array":
                arrays.append(node)
            for value in node.values():
                walk(value)

    walk(bounded)
    assert strings and arrays
    assert all("maxLength" in s for s in strings) and all("maxItems" in a for a in arrays)
    assert "maxLength" not in json.dumps(SCHEMA)  # the original is left alone
