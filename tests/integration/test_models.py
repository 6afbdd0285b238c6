import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx2
import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.memory import InMemorySaver

from graph_distill.context import ConversationContext, DistillContext, ModelContext
from graph_distill.conversation.graph import conversation_builder, conversation_graph
from graph_distill.llm import models
from graph_distill.llm.models import (
    LLM_RETRY,
    chat_model,
    describe_error,
    is_transient,
    model_name,
)
from graph_distill.llm.resources import RunResources, with_resources
from graph_distill.llm.settings import (
    DEFAULT_MODEL,
    ENV_NAMES,
    KEYLESS_PLACEHOLDER,
    MIMO_BASE_URL,
    ConfigError,
)
from graph_distill.llm.usage import add_usage, empty_usage, usage_of
from tests.support.fake_openai import CACHE_BLOCK_TOKENS, FakeOpenAIServer, FaultRates

THINKING_OFF = {"thinking": {"type": "disabled"}}
LONG_SYSTEM_PROMPT = "You are a patient tutor who explains every step of the reasoning. " * 40
REQUEST = httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions")


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MIMO_* from the machine's environment or a ``.env``."""
    for env_name in ENV_NAMES.values():
        monkeypatch.delenv(env_name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def context_for(server: FakeOpenAIServer, **fields: object) -> ConversationContext:
    return ConversationContext(base_url=server.base_url, max_retries=0, **fields)


def status_error(cls: type[openai.APIStatusError], status: int) -> openai.APIStatusError:
    response = httpx2.Response(status, request=REQUEST)
    return cls(f"Error code: {status} - server says no", response=response, body=None)


# ---------------------------------------------------------------- building and requests


def test_request_reaches_the_server_without_thinking_field(fake: FakeOpenAIServer) -> None:
    llm = chat_model(
        context_for(fake, model="fake-chat"),
        "assistant",
        temperature=0.2,
        max_tokens=64,
        resources=RunResources(),
    )
    reply = llm.invoke([HumanMessage("How do hash maps resize?")])

    assert isinstance(reply, AIMessage) and reply.text
    [body] = fake.requests
    assert "thinking" not in body
    assert "extra_body" not in body
    assert body["model"] == "fake-chat"
    assert body["temperature"] == 0.2
    # both: llama.cpp-style servers read only max_tokens, ChatOpenAI sends max_completion_tokens
    assert body["max_tokens"] == body["max_completion_tokens"] == 64


def test_mimo_url_builds_a_model_with_thinking_disabled() -> None:
    context = ModelContext(base_url=MIMO_BASE_URL, api_key="sk-test")
    llm = chat_model(context, "distill", temperature=0.3, max_tokens=100, resources=RunResources())

    assert llm.extra_body == THINKING_OFF
    payload = llm._get_request_payload([HumanMessage("hi")])
    assert payload["extra_body"]["thinking"] == THINKING_OFF["thinking"]


def test_mimo_is_the_default_server() -> None:
    llm = chat_model(
        ModelContext(api_key="sk-test"),
        "user",
        temperature=0.9,
        max_tokens=10,
        resources=RunResources(),
    )
    assert llm.openai_api_base == MIMO_BASE_URL
    assert llm.extra_body == THINKING_OFF


def test_thinking_switch_is_sent_in_the_request_body(
    fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The MiMo host cannot be reached offline: pretend the fake is MiMo to see the wire format.
    monkeypatch.setattr(models, "is_mimo", lambda base_url: base_url == fake.base_url)
    llm = chat_model(
        context_for(fake), "assistant", temperature=0.7, max_tokens=32, resources=RunResources()
    )
    llm.invoke([HumanMessage("hello")])

    [body] = fake.requests
    assert body["thinking"] == {"type": "disabled"}
    assert "extra_body" not in body


@pytest.mark.parametrize("role", ["user", "assistant"])
def test_per_role_model_reaches_the_request(fake: FakeOpenAIServer, role: str) -> None:
    context = context_for(fake, model="shared", user_model="plays-user", assistant_model="plays-ai")
    chat_model(context, role, temperature=0.5, max_tokens=16, resources=RunResources()).invoke(
        [HumanMessage("hi")]
    )
    expected = {"user": "plays-user", "assistant": "plays-ai"}[role]
    assert fake.requests[-1]["model"] == expected


def test_distill_model_reaches_the_request(fake: FakeOpenAIServer) -> None:
    context = DistillContext(base_url=fake.base_url, model="shared", distill_model="notes-writer")
    chat_model(context, "distill", temperature=0.3, max_tokens=16, resources=RunResources()).invoke(
        [HumanMessage("x")]
    )
    assert fake.requests[-1]["model"] == "notes-writer"


def test_env_and_dotenv_fill_unset_context_fields(
    fake: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(f"MIMO_BASE_URL={fake.base_url}/\n", encoding="utf-8")
    monkeypatch.setenv("MIMO_USER_MODEL", "env-user-model")
    llm = chat_model(
        ConversationContext(max_retries=0),
        "user",
        temperature=0.5,
        max_tokens=16,
        resources=RunResources(),
    )
    llm.invoke([HumanMessage("hi")])
    assert fake.requests[-1]["model"] == "env-user-model"


def test_keyless_server_gets_the_placeholder_key(fake: FakeOpenAIServer) -> None:
    chat_model(
        context_for(fake), "user", temperature=0.5, max_tokens=8, resources=RunResources()
    ).invoke([HumanMessage("a")])
    assert fake.request_headers[-1]["authorization"] == f"Bearer {KEYLESS_PLACEHOLDER}"


def test_configured_key_is_sent(fake: FakeOpenAIServer) -> None:
    context = context_for(fake, api_key="sk-live")
    chat_model(context, "user", temperature=0.5, max_tokens=8, resources=RunResources()).invoke(
        [HumanMessage("a")]
    )
    assert fake.request_headers[-1]["authorization"] == "Bearer sk-live"


def test_key_is_not_in_the_model_repr() -> None:
    context = ModelContext(base_url="http://127.0.0.1:9/v1", api_key="sk-secret-value")
    llm = chat_model(context, "user", temperature=0.5, max_tokens=8, resources=RunResources())
    assert "sk-secret-value" not in repr(llm)
    assert "sk-secret-value" not in repr(context)


def test_mimo_without_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="MIMO_API_KEY"):
        chat_model(ModelContext(), "user", temperature=0.5, max_tokens=8, resources=RunResources())


def test_timeout_and_retries_come_from_the_context() -> None:
    context = ModelContext(base_url="http://127.0.0.1:9/v1", request_timeout=7.5, max_retries=5)
    llm = chat_model(context, "assistant", temperature=0.5, max_tokens=8, resources=RunResources())
    assert llm.request_timeout == 7.5
    assert llm.max_retries == 5


def test_a_run_builds_one_instance_per_settings() -> None:
    context = ConversationContext(base_url="http://127.0.0.1:9/v1", model="m")
    run = RunResources()

    def build(ctx: ConversationContext, temperature: float = 0.5, max_tokens: int = 8) -> object:
        return chat_model(
            ctx, "user", temperature=temperature, max_tokens=max_tokens, resources=run
        )

    first = build(context)
    assert build(ConversationContext(base_url="http://127.0.0.1:9/v1", model="m")) is first
    assert build(context, temperature=0.6) is not first
    assert build(context, max_tokens=9) is not first
    other_model = ConversationContext(base_url="http://127.0.0.1:9/v1", model="m", user_model="u")
    assert build(other_model) is not first
    other_run = RunResources()
    assert (
        chat_model(context, "user", temperature=0.5, max_tokens=8, resources=other_run) is not first
    )


# ---------------------------------------------------------------- model names


def test_model_name_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert model_name(ModelContext(), "user") == DEFAULT_MODEL
    monkeypatch.setenv("MIMO_MODEL", "env-model")
    assert model_name(ModelContext(), "distill") == "env-model"
    assert model_name(ModelContext(model="flag-model"), "distill") == "flag-model"
    context = ConversationContext(model="shared", assistant_model="ai-model")
    assert model_name(context, "assistant") == "ai-model"
    assert model_name(context, "user") == "shared"
    monkeypatch.setenv("MIMO_USER_MODEL", "env-user")
    assert model_name(context, "user") == "env-user"
    assert model_name(DistillContext(distill_model="notes"), "distill") == "notes"


# ---------------------------------------------------------------- usage


def test_usage_of_a_real_reply_reports_cached_prefix(fake: FakeOpenAIServer) -> None:
    llm = chat_model(
        context_for(fake), "assistant", temperature=0.5, max_tokens=64, resources=RunResources()
    )
    system = SystemMessage(LONG_SYSTEM_PROMPT)
    first = usage_of(llm.invoke([system, HumanMessage("What is a closure?")]))
    second = usage_of(llm.invoke([system, HumanMessage("And what is a generator?")]))

    assert first["input_tokens"] > CACHE_BLOCK_TOKENS
    assert first["output_tokens"] > 0
    assert first["cached_tokens"] == 0
    assert first["calls"] == 1
    assert CACHE_BLOCK_TOKENS <= second["cached_tokens"] < second["input_tokens"]
    assert second["output_tokens"] > 0
    stats = fake.stats
    total = add_usage(first, second)
    assert total["input_tokens"] == stats["prompt_tokens"]
    assert total["output_tokens"] == stats["completion_tokens"]
    assert total["cached_tokens"] == stats["cached_tokens"]
    assert total["calls"] == 2


def test_usage_of_a_streamed_reply(fake: FakeOpenAIServer) -> None:
    llm = chat_model(
        context_for(fake), "assistant", temperature=0.5, max_tokens=64, resources=RunResources()
    )
    chunks = list(llm.stream([HumanMessage("Stream me something")]))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    usage = usage_of(merged)
    assert usage["input_tokens"] == fake.stats["prompt_tokens"]
    assert usage["output_tokens"] == fake.stats["completion_tokens"] > 0


def test_usage_of_a_message_without_usage_is_zero() -> None:
    assert usage_of(AIMessage("no usage")) == {**empty_usage(), "calls": 1}


def test_add_usage_sums_and_tolerates_missing_sides() -> None:
    one = {"input_tokens": 10, "output_tokens": 3, "cached_tokens": 4, "calls": 1}
    two = {"input_tokens": 5, "output_tokens": 2, "cached_tokens": 0, "calls": 1}
    assert add_usage(one, two) == {
        "input_tokens": 15,
        "output_tokens": 5,
        "cached_tokens": 4,
        "calls": 2,
    }
    assert add_usage(None, one) == one
    assert add_usage(one, None) == one
    assert add_usage(None, None) == empty_usage()
    assert add_usage({"calls": 2}, {"input_tokens": 7}) == {
        "input_tokens": 7,
        "output_tokens": 0,
        "cached_tokens": 0,
        "calls": 2,
    }


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "error",
    [
        ConnectionResetError("reset by peer"),
        TimeoutError("slow"),
        httpx2.RemoteProtocolError("peer closed connection without sending complete message"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_errors_the_client_cannot_retry_are_transient(error: BaseException) -> None:
    assert is_transient(error) is True


@pytest.mark.parametrize(
    "error",
    [
        # The client already retried these: another node attempt would multiply the requests.
        openai.APIConnectionError(request=REQUEST),
        openai.APITimeoutError(request=REQUEST),
        status_error(openai.RateLimitError, 429),
        status_error(openai.InternalServerError, 500),
        status_error(openai.InternalServerError, 503),
        status_error(openai.AuthenticationError, 401),
        status_error(openai.PermissionDeniedError, 403),
        status_error(openai.BadRequestError, 400),
        status_error(openai.NotFoundError, 404),
        ValueError("bad json"),
        KeyError("missing"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_other_errors_are_not_retried_by_the_node(error: BaseException) -> None:
    assert is_transient(error) is False


def test_retry_policy_uses_is_transient() -> None:
    assert LLM_RETRY.retry_on is is_transient
    assert LLM_RETRY.max_attempts > 1


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("500", openai.InternalServerError),
        ("429", openai.RateLimitError),
        ("drop", openai.APIConnectionError),
    ],
)
def test_faults_the_client_retries_are_not_retried_again(
    fake: FakeOpenAIServer, kind: str, error_type: type[Exception]
) -> None:
    fake.enqueue_fault(kind)
    llm = chat_model(
        context_for(fake), "assistant", temperature=0.5, max_tokens=8, resources=RunResources()
    )
    with pytest.raises(error_type) as caught:
        llm.invoke([HumanMessage("hi")])
    assert is_transient(caught.value) is False
    assert fake.calls == 1


async def test_a_stream_cut_midway_is_retried_by_the_node(fake: FakeOpenAIServer) -> None:
    fake.enqueue_fault("drop", after_chunks=2)
    llm = chat_model(
        context_for(fake), "assistant", temperature=0.5, max_tokens=64, resources=RunResources()
    )
    with pytest.raises(Exception) as caught:
        async for _chunk in llm.astream([HumanMessage("hi")]):
            pass
    assert is_transient(caught.value) is True


def test_wrong_key_fails_after_one_call_with_a_plain_message() -> None:
    with FakeOpenAIServer(require_key="sk-right") as server:
        context = ConversationContext(base_url=server.base_url, api_key="sk-wrong-secret")
        llm = chat_model(context, "user", temperature=0.5, max_tokens=8, resources=RunResources())
        with pytest.raises(openai.AuthenticationError) as caught:
            llm.invoke([HumanMessage("hi")])
        assert server.calls == 1

    message = describe_error(caught.value)
    assert "401" in message
    assert "key" in message.lower()
    assert "sk-wrong-secret" not in message
    assert "sk-right" not in message
    assert is_transient(caught.value) is False


def test_scripted_401_is_not_retried(fake: FakeOpenAIServer) -> None:
    fake.enqueue_fault("401")
    context = ConversationContext(base_url=fake.base_url, api_key="sk-abc", max_retries=3)
    llm = chat_model(context, "assistant", temperature=0.5, max_tokens=8, resources=RunResources())
    with pytest.raises(openai.AuthenticationError):
        llm.invoke([HumanMessage("hi")])
    assert fake.calls == 1


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (status_error(openai.AuthenticationError, 401), "MIMO_API_KEY"),
        (status_error(openai.PermissionDeniedError, 403), "403"),
        (status_error(openai.NotFoundError, 404), "--model"),
        (status_error(openai.RateLimitError, 429), "429"),
        (status_error(openai.InternalServerError, 503), "503"),
        (openai.APITimeoutError(request=REQUEST), "in time"),
        (openai.APIConnectionError(request=REQUEST), "could not reach the server"),
        (ValueError("bad things"), "ValueError: bad things"),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_describe_error_is_one_plain_line(error: BaseException, expected: str) -> None:
    message = describe_error(error)
    assert expected in message
    assert "\n" not in message
    assert "Traceback" not in message


def test_describe_error_names_the_connection_cause() -> None:
    error = openai.APIConnectionError(request=REQUEST)
    error.__cause__ = ConnectionRefusedError("[Errno 111] Connection refused")
    assert "Connection refused" in describe_error(error)


def test_describe_error_shortens_long_messages() -> None:
    message = describe_error(ValueError("word\n" * 500))
    assert len(message) <= 220
    assert "\n" not in message
    assert message.endswith("…")


# ---------------------------------------------------------------- requests per model call


@pytest.mark.parametrize(
    ("faults", "error_type"),
    [
        (FaultRates(rate_429=1.0, retry_after=0.05), openai.RateLimitError),
        (FaultRates(rate_500=1.0), openai.InternalServerError),
    ],
    ids=["429", "500"],
)
async def test_a_failing_server_gets_at_most_four_requests_per_model_call(
    faults: FaultRates, error_type: type[Exception]
) -> None:
    """The client's retries and the node's retry policy do not multiply: the default three
    retries of the client are all a model call gets (Retry-After honoured)."""
    with FakeOpenAIServer(faults=faults) as server:
        ctx = ConversationContext(base_url=server.base_url, min_rounds=1, max_rounds=1)
        with pytest.raises(error_type):
            await conversation_graph.ainvoke({"target_rounds": 1}, context=ctx)
        records = server.records
    assert len(records) == 4
    if faults.rate_429:
        gaps = [b.received_at - a.received_at for a, b in itertools.pairwise(records)]
        assert min(gaps) >= 0.045


async def test_a_cut_stream_is_asked_again_by_the_node(fake: FakeOpenAIServer) -> None:
    """What the client cannot retry (a reply cut midway) the node's retry policy does."""
    fake.enqueue_fault("drop", after_chunks=2)
    ctx = ConversationContext(base_url=fake.base_url, min_rounds=1, max_rounds=1)
    config = {"configurable": {"thread_id": "t"}}
    graph = conversation_builder.compile(checkpointer=InMemorySaver())
    chunks = []
    async for chunk, _meta in graph.astream(
        {"target_rounds": 1}, config, context=ctx, stream_mode="messages"
    ):
        chunks.append(chunk)
    assert [record.fault for record in fake.records] == ["drop", None]
    assert all(record.body.get("stream") for record in fake.records)
    assert chunks


async def test_a_sporadic_failure_is_asked_again_by_the_node(fake: FakeOpenAIServer) -> None:
    """When most of the run's recent requests succeeded, a call whose client retries all failed
    gets another attempt of its node (a flaky server is not a failing one)."""
    ctx = ConversationContext(base_url=fake.base_url, min_rounds=1, max_rounds=3)
    async with RunResources() as resources:
        config = with_resources({}, resources)
        await conversation_graph.ainvoke({"target_rounds": 3}, config, context=ctx)  # 5 calls
        healthy = fake.calls
        for _ in range(4):
            fake.enqueue_fault("429", retry_after=0.01)
        out = await conversation_graph.ainvoke({"target_rounds": 1}, config, context=ctx)
    faults = [record.fault for record in fake.records[healthy:]]
    assert faults == ["429"] * 4 + [None]
    assert out["conversation_record"]["total_rounds"] == 1
