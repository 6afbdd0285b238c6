"""The one place that builds chat models (``ChatOpenAI``) from the run settings: a stock
``ChatOpenAI`` on the run's throttled client, or, unless the run takes the stock path, the same
model with the fast path of ``graph_distill.llm.fast_client`` (same settings, same request
bytes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

import openai
from langchain_openai import ChatOpenAI
from langgraph.types import RetryPolicy

from graph_distill.context import ModelContext
from graph_distill.llm import fast_client
from graph_distill.llm.resources import RunResources
from graph_distill.llm.settings import (
    KEYLESS_PLACEHOLDER,
    ModelSettings,
    is_mimo,
    require_usable,
    resolve_settings,
)
from graph_distill.llm.throttle import failed_while_coping, is_stream_cut

Role = Literal["user", "assistant", "distill"]


def _settings(context: ModelContext, role: Role) -> ModelSettings:
    return resolve_settings(
        {
            "api_key": context.api_key,
            "base_url": context.base_url,
            "model": context.model,
            f"{role}_model": getattr(context, f"{role}_model", None),
        }
    )


def model_name(context: ModelContext, role: Role) -> str:
    """The model ``role`` is played by (for the files' metadata)."""
    return _settings(context, role).model_for(role)


@dataclass(frozen=True, kw_only=True)
class _ModelSpec:
    base_url: str
    api_key: str
    model: str
    temperature: float
    max_tokens: int
    timeout: float
    max_retries: int
    streams: bool


def chat_model(
    context: ModelContext,
    role: Role,
    *,
    temperature: float,
    max_tokens: int,
    resources: RunResources,
) -> ChatOpenAI:
    """A ``ChatOpenAI`` for ``role`` on ``resources`` (a node's: see ``node_resources``);
    unset context fields resolve from env and ``.env``. Built once per ``resources`` and
    settings (env and ``.env`` are read then)."""
    given = (
        context.api_key,
        context.base_url,
        context.model,
        getattr(context, f"{role}_model", None),
    )
    stock = resources.stock or context.stock
    key = (role, *given, context.request_timeout, context.max_retries, temperature, max_tokens)
    return resources.model(
        (*key, stock), lambda: _build(context, role, temperature, max_tokens, resources, stock)
    )


def _build(
    context: ModelContext,
    role: Role,
    temperature: float,
    max_tokens: int,
    resources: RunResources,
    stock: bool,
) -> ChatOpenAI:
    settings = require_usable(_settings(context, role))
    spec = _ModelSpec(
        base_url=settings.base_url,
        api_key=settings.api_key or KEYLESS_PLACEHOLDER,
        model=settings.model_for(role),
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=context.request_timeout,
        max_retries=context.max_retries,
        streams=role == "assistant",
    )
    return _chat_openai(spec, resources, stock)


def _chat_openai(spec: _ModelSpec, resources: RunResources, stock: bool) -> ChatOpenAI:
    # Every request of the run (the client's retries included) goes through the run's one
    # HTTP client and so through its throttle.
    extra_body = {"thinking": {"type": "disabled"}} if is_mimo(spec.base_url) else None
    if not is_mimo(spec.base_url) and urlparse(spec.base_url).hostname != "api.openai.com":
        # ChatOpenAI sends only max_completion_tokens; llama.cpp-style servers read max_tokens
        # and would otherwise generate until the context is full.
        extra_body = {"max_tokens": spec.max_tokens}
    settings: dict[str, Any] = {
        "base_url": spec.base_url,
        "api_key": spec.api_key,
        "model": spec.model,
        "temperature": spec.temperature,
        "max_tokens": spec.max_tokens,
        "timeout": spec.timeout,
        "max_retries": spec.max_retries,
        "stream_usage": True,
        "extra_body": extra_body,
        "http_async_client": resources.http_client(),
        # Only the assistant's reply is ever shown live; other roles never pay for streaming.
        "disable_streaming": not spec.streams,
    }
    if stock:
        return ChatOpenAI(**settings)
    return fast_client.attach(fast_client.FastChatOpenAI(**settings), resources)


def is_transient(error: BaseException) -> bool:
    """Errors worth another attempt of a whole node.

    The openai client already retried 429s, 5xx answers, timeouts and failed connections
    (``max_retries`` times, honouring Retry-After). Another node attempt would multiply those
    requests, so the node asks again only when most of the run's recent requests succeeded
    (the failures were sporadic): a failing or unreachable server gets at most
    ``max_retries + 1`` requests per model call. What the client cannot retry, a streamed
    reply cut midway, the node always does."""
    if is_stream_cut(error):
        return True
    if isinstance(error, _CLIENT_RETRIED):
        return failed_while_coping(error)
    if isinstance(error, openai.APIError):
        return False
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    return any(cls.__name__ == "TransportError" for cls in type(error).__mro__)


_CLIENT_RETRIED = (
    openai.APIConnectionError,  # timeouts included
    openai.RateLimitError,
    openai.InternalServerError,
)


LLM_RETRY = RetryPolicy(max_attempts=3, initial_interval=1.0, retry_on=is_transient)


def describe_error(error: BaseException) -> str:
    """One plain line for a failed model call (never includes the key)."""
    if isinstance(error, openai.AuthenticationError):
        return "the server refused the API key (401): check MIMO_API_KEY or --api-key"
    if isinstance(error, openai.PermissionDeniedError):
        return "the server denied access to this model (403)"
    if isinstance(error, openai.NotFoundError):
        return "the server does not know this model or endpoint (404): check --model/--base-url"
    if isinstance(error, openai.RateLimitError):
        return "rate limited (429) even after retries"
    if isinstance(error, openai.APIStatusError):
        return f"the server answered {error.status_code}: {_short(error.message)}"
    if isinstance(error, openai.APITimeoutError):
        return "the server did not answer in time"
    if isinstance(error, openai.APIConnectionError):
        return f"could not reach the server: {_short(str(error.__cause__ or error))}"
    return f"{type(error).__name__}: {_short(str(error))}"


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
