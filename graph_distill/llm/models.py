"""The one place that builds chat models (``ChatOpenAI``) from the run settings."""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import Literal
from urllib.parse import urlparse

import openai
from langchain_openai import ChatOpenAI
from langgraph.types import RetryPolicy

from graph_distill.context import ModelContext
from graph_distill.llm.settings import (
    KEYLESS_PLACEHOLDER,
    ModelSettings,
    is_mimo,
    require_usable,
    resolve_settings,
)
from graph_distill.llm.throttle import RunThrottle, ThrottledAsyncClient, shared_throttle

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


def chat_model(
    context: ModelContext,
    role: Role,
    *,
    temperature: float,
    max_tokens: int,
) -> ChatOpenAI:
    """A ``ChatOpenAI`` for ``role``; unset context fields resolve from env and ``.env``."""
    settings = require_usable(_settings(context, role))
    loop = _running_loop()
    return _build(
        base_url=settings.base_url,
        api_key=settings.api_key or KEYLESS_PLACEHOLDER,
        model=settings.model_for(role),
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=context.request_timeout,
        max_retries=context.max_retries,
        streams=role == "assistant",
        loop=loop,
        throttle=shared_throttle(context.requests_per_minute, loop),
    )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@lru_cache(maxsize=64)
def _build(
    *,
    base_url: str,
    api_key: str,
    model: str,
    temperature: float,
    max_tokens: int,
    timeout: float,
    max_retries: int,
    streams: bool,
    loop: asyncio.AbstractEventLoop | None,
    throttle: RunThrottle,
) -> ChatOpenAI:
    # Cached: a new client per call would cost connection setup on every model call. One per
    # event loop: an async HTTP client cannot be used after the loop it connected in closes.
    # Every request of the run (retries included) goes through the run's one throttle.
    http_async_client = ThrottledAsyncClient(throttle) if loop is not None else None
    extra_body = {"thinking": {"type": "disabled"}} if is_mimo(base_url) else None
    if not is_mimo(base_url) and urlparse(base_url).hostname != "api.openai.com":
        # ChatOpenAI sends only max_completion_tokens; llama.cpp-style servers read max_tokens
        # and would otherwise generate until the context is full.
        extra_body = {"max_tokens": max_tokens}
    return ChatOpenAI(
        base_url=base_url,
        api_key=api_key,
        model=model,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        max_retries=max_retries,
        stream_usage=True,
        extra_body=extra_body,
        http_async_client=http_async_client,
        # Only the assistant's reply is ever shown live; other roles never pay for streaming.
        disable_streaming=not streams,
    )


def is_transient(error: BaseException) -> bool:
    """Errors worth another attempt of a whole node (the client already retried 429/5xx)."""
    if isinstance(error, openai.AuthenticationError | openai.PermissionDeniedError):
        return False
    if isinstance(
        error,
        openai.APIConnectionError
        | openai.RateLimitError
        | openai.InternalServerError
        | ConnectionError
        | TimeoutError,
    ):
        return True
    # A stream cut midway surfaces as the HTTP library's own transport error (httpx or httpx2).
    return any(cls.__name__ == "TransportError" for cls in type(error).__mro__)


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
