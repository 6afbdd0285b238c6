"""The models ``chat_model`` builds send byte for byte the body a stock ``ChatOpenAI`` with the
same settings sends, on every path to the SDK (create, with_raw_response, parse, streaming),
with and without the model's own ``extra_body`` entries, whatever the messages."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import _convert_message_to_dict

from graph_distill.context import ConversationContext
from graph_distill.llm import fast_client, models
from graph_distill.llm.fast_client import (
    EncodedMessages,
    FastChatOpenAI,
    RunAsyncOpenAI,
    plain_dicts,
)
from graph_distill.llm.models import chat_model
from graph_distill.llm.resources import RunResources
from graph_distill.llm.settings import ENV_NAMES
from graph_distill.llm.structured import OutputSpec, ainvoke_structured
from tests.support.fake_openai import FakeOpenAIServer

PLAIN: list[BaseMessage] = [
    SystemMessage('You are a patient tutor. Ünïcode too: \u00e9\u4e2d "quotes" \\ and \n.'),
    HumanMessage("How do hash maps resize?", id="m0"),
    AIMessage("They double and rehash every key.", id="m1"),
    HumanMessage("And when they shrink?"),
    AIMessage(""),
    HumanMessage("ok"),
]
UNUSUAL: list[BaseMessage] = [
    SystemMessage("rules", additional_kwargs={"__openai_role__": "developer"}),
    HumanMessage("hello", name="ada"),
    HumanMessage([{"type": "text", "text": "a list of parts"}]),
    AIMessage("", tool_calls=[{"name": "look", "args": {"q": "x"}, "id": "c1"}]),
    HumanMessage("thanks"),
]
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
    "additionalProperties": False,
}
RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "t", "schema": SCHEMA, "strict": True},
}


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for env_name in ENV_NAMES.values():
        monkeypatch.delenv(env_name, raising=False)
    monkeypatch.delenv("GRAPH_DISTILL_STOCK", raising=False)  # both paths are built here
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def stock_twin(model: ChatOpenAI) -> ChatOpenAI:
    """A plain ``ChatOpenAI`` with the settings of ``model``."""
    assert isinstance(model, FastChatOpenAI)
    return ChatOpenAI(
        base_url=model.openai_api_base,
        api_key=model.openai_api_key,
        model=model.model_name,
        temperature=model.temperature,
        max_tokens=model.max_tokens,
        timeout=model.request_timeout,
        max_retries=model.max_retries,
        stream_usage=True,
        extra_body=model.extra_body,
        disable_streaming=model.disable_streaming,
    )


Call = Callable[[ChatOpenAI, list[BaseMessage]], Awaitable[Any]]


async def invoke(model: ChatOpenAI, messages: list[BaseMessage]) -> None:
    await model.ainvoke(messages)


async def stream(model: ChatOpenAI, messages: list[BaseMessage]) -> None:
    async for _chunk in model.astream(messages):
        pass


async def parse(model: ChatOpenAI, messages: list[BaseMessage]) -> None:
    await model.ainvoke(messages, response_format=RESPONSE_FORMAT)


async def stream_parse(model: ChatOpenAI, messages: list[BaseMessage]) -> None:
    async for _chunk in model.astream(messages, response_format=RESPONSE_FORMAT):
        pass


async def structured(model: ChatOpenAI, messages: list[BaseMessage]) -> None:
    await ainvoke_structured(model, messages, OutputSpec(name="t", schema=SCHEMA))


async def sent_bodies(
    fake: FakeOpenAIServer, call: Call, messages: list[BaseMessage], *, own_extra: bool = True
) -> bytes:
    """The raw bodies ``chat_model``'s model and its stock twin send, which must be equal."""
    ctx = ConversationContext(base_url=fake.base_url, api_key="k", model="m", max_retries=0)
    async with RunResources() as resources:
        ours = chat_model(ctx, "assistant", temperature=0.5, max_tokens=64, resources=resources)
        assert isinstance(ours.root_async_client, RunAsyncOpenAI)  # messages spliced in
        if not own_extra:  # as for api.openai.com, which gets no extra_body entries
            ours = ours.model_copy(update={"extra_body": None})
        await call(ours, messages)
        await call(stock_twin(ours), messages)
    first, second = fake.records[-2:]
    assert first.raw == second.raw
    return first.raw


@pytest.mark.parametrize("call", [invoke, stream, parse, stream_parse, structured])
@pytest.mark.parametrize("messages", [PLAIN, UNUSUAL], ids=["plain", "unusual"])
async def test_the_body_is_byte_for_byte_the_stock_one(
    fake: FakeOpenAIServer, call: Call, messages: list[BaseMessage]
) -> None:
    raw = await sent_bodies(fake, call, messages)
    assert b'"messages":[{"content":' in raw
    assert b'"max_tokens":64' in raw  # the model's own extra_body entry, kept
    bare = await sent_bodies(fake, call, messages, own_extra=False)
    assert b'"max_tokens"' not in bare


async def test_mimo_thinking_switch_is_sent_the_same(
    fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(models, "is_mimo", lambda base_url: base_url == fake.base_url)
    for call in (invoke, stream, structured):
        raw = await sent_bodies(fake, call, PLAIN)
        assert b'"thinking":{"type":"disabled"}' in raw


def test_plain_messages_convert_as_chat_openai_converts_them() -> None:
    assert plain_dicts(PLAIN) == [_convert_message_to_dict(m) for m in PLAIN]
    assert plain_dicts(UNUSUAL) is None
    for message in UNUSUAL[:-1]:
        assert plain_dicts([message]) is None


def test_plain_messages_come_encoded_as_the_sdk_encodes_them() -> None:
    encoded = plain_dicts(PLAIN)
    assert isinstance(encoded, EncodedMessages)
    assert encoded.encoded == [
        json.dumps(d, ensure_ascii=False, separators=(",", ":")).encode() for d in encoded
    ]


async def test_a_body_that_holds_the_splice_mark_is_left_to_the_sdk(
    fake: FakeOpenAIServer,
) -> None:
    """A stop sequence made of the mark the messages' place is held by: the body is still the
    stock one (the SDK builds it)."""
    ctx = ConversationContext(base_url=fake.base_url, api_key="k", model="m", max_retries=0)
    mark = fast_client.MESSAGES_MARK
    async with RunResources() as resources:
        ours = chat_model(ctx, "assistant", temperature=0.5, max_tokens=64, resources=resources)
        await ours.ainvoke(PLAIN, stop=[mark])
        await stock_twin(ours).ainvoke(PLAIN, stop=[mark])
    first, second = fake.records[-2:]
    assert first.raw == second.raw


@pytest.mark.parametrize("call", [invoke, stream, structured])
async def test_the_stock_path_sends_the_same_bytes(fake: FakeOpenAIServer, call: Call) -> None:
    """``stock`` builds a plain ``ChatOpenAI`` on the stock HTTP client; its requests are the
    fast path's, byte for byte."""
    fast_ctx = ConversationContext(base_url=fake.base_url, api_key="k", model="m", max_retries=0)
    stock_ctx = ConversationContext(
        base_url=fake.base_url, api_key="k", model="m", max_retries=0, stock=True
    )
    async with RunResources(aiohttp=True) as fast, RunResources(aiohttp=True, stock=True) as stock:
        ours = chat_model(fast_ctx, "assistant", temperature=0.5, max_tokens=64, resources=fast)
        plain = chat_model(stock_ctx, "assistant", temperature=0.5, max_tokens=64, resources=stock)
        assert isinstance(ours, FastChatOpenAI)
        assert type(plain) is ChatOpenAI
        await call(ours, PLAIN)
        await call(plain, PLAIN)
    first, second = fake.records[-2:]
    assert first.raw == second.raw
