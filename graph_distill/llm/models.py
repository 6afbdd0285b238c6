"""The one place that builds chat models (``ChatOpenAI``) from the run settings."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlparse

import httpx2
import openai
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatResult
from langchain_openai import ChatOpenAI
from langchain_openai.chat_models.base import _handle_openai_api_error, _handle_openai_bad_request
from langgraph.types import RetryPolicy
from openai._base_client import _merge_mappings
from openai._models import FinalRequestOptions
from openai._utils._json import openapi_dumps
from pydantic import PrivateAttr

from graph_distill.context import ModelContext
from graph_distill.llm.resources import RunResources, run_resources
from graph_distill.llm.settings import (
    KEYLESS_PLACEHOLDER,
    ModelSettings,
    is_mimo,
    require_usable,
    resolve_settings,
)
from graph_distill.llm.structured import LevelMemory
from graph_distill.llm.throttle import failed_while_coping, is_stream_cut

Role = Literal["user", "assistant", "distill"]

_PLAIN_ROLES: dict[type[BaseMessage], str] = {
    HumanMessage: "user",
    AIMessage: "assistant",
    SystemMessage: "system",
}
# Where the messages go in a body before their JSON is spliced in (no text has it).
_MESSAGES_MARK = "\0graph-distill: the messages\0"
_MESSAGES_MARK_JSON = openapi_dumps(_MESSAGES_MARK)
# ChatOpenAI sends system messages to these models as "developer" messages.
_O_SERIES = re.compile(r"^o\d")


def _plain_dict(message: BaseMessage) -> dict[str, Any] | None:
    """What ChatOpenAI sends for a plain text message (no name, tool calls or extra fields);
    None for any other message."""
    role = _PLAIN_ROLES.get(type(message))
    content = message.content
    if role is None or not isinstance(content, str) or message.name or message.additional_kwargs:
        return None
    if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
        return None
    return {"content": content, "role": role}


class EncodedMessages(list[dict[str, Any]]):
    """A request's plain messages, with each one's JSON as the SDK encodes it (``encoded``)."""

    def __init__(self, messages: Sequence[dict[str, Any]], encoded: Sequence[bytes]) -> None:
        super().__init__(messages)
        self.encoded = list(encoded)


def _plain(message: BaseMessage) -> tuple[dict[str, Any], bytes] | None:
    as_dict = _plain_dict(message)
    return None if as_dict is None else (as_dict, openapi_dumps(as_dict))


def plain_dicts(
    messages: Sequence[BaseMessage], resources: RunResources | None = None
) -> EncodedMessages | None:
    """The request's messages when all are plain text messages; None otherwise. With
    ``resources``, each message is converted and encoded once per run."""
    dicts, encoded = [], []
    for message in messages:
        plain = (
            _plain(message) if resources is None else resources.derived("plain", message, _plain)
        )
        if plain is None:
            return None
        dicts.append(plain[0])
        encoded.append(plain[1])
    return EncodedMessages(dicts, encoded)


class RunAsyncOpenAI(openai.AsyncOpenAI):
    """The SDK's client, except that a body whose messages come encoded (``EncodedMessages``)
    is built from their JSON rather than by encoding the whole history again on every call.
    The bytes are those the SDK would send: a JSON list is its items' JSON joined by commas,
    in the place the SDK's own encoding of the rest of the body puts the list."""

    def _build_request(
        self, options: FinalRequestOptions, *, retries_taken: int = 0
    ) -> httpx2.Request:
        body = _spliced_body(options)
        if body is not None:
            options = options.model_copy(update={"json_data": body, "extra_json": None})
        return super()._build_request(options, retries_taken=retries_taken)


def _spliced_body(options: FinalRequestOptions) -> bytes | None:
    """The JSON body of ``options`` with its encoded messages spliced in; None when it has
    none (or anything unusual), for the SDK to build."""
    extra, data = options.extra_json, options.json_data
    messages = extra.get("messages") if isinstance(extra, Mapping) else None
    if not isinstance(messages, EncodedMessages) or not isinstance(data, Mapping):
        return None
    if options.content is not None or options.files is not None:
        return None
    merged = _merge_mappings(data, extra)
    merged["messages"] = _MESSAGES_MARK
    body = openapi_dumps(merged)
    if body.count(_MESSAGES_MARK_JSON) != 1:
        return None
    return body.replace(_MESSAGES_MARK_JSON, b"[" + b",".join(messages.encoded) + b"]")


def _as_messages(input_: LanguageModelInput) -> list[BaseMessage] | None:
    """``input_`` when it already is a list of messages (as the chat model's own calls pass
    it), saving a second pass of conversion."""
    if isinstance(input_, list) and all(isinstance(m, BaseMessage) for m in input_):
        return input_
    return None


class RunChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` whose requests cost the same at any history length.

    The openai SDK walks every message of a request against its TypedDicts (``transform``),
    which changes nothing for chat messages yet costs more than the rest of the call once a
    conversation is long. So the messages travel in ``extra_body``, which the SDK merges into
    the body unchanged, in the place ``messages`` has there: the bytes on the wire stay the
    same, on every path to the SDK (create, with_raw_response, parse, streaming), and the
    model's own ``extra_body`` entries are kept. Plain text messages are converted directly
    (as ChatOpenAI would); anything else goes through ChatOpenAI's own conversion.
    """

    _levels: LevelMemory = PrivateAttr(default_factory=LevelMemory)
    _resources: RunResources | None = PrivateAttr(default=None)

    @property
    def structured_levels(self) -> LevelMemory:
        """The structured-output levels of the run this model belongs to."""
        return self._levels

    def _get_request_payload(
        self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict:
        messages = _as_messages(input_) or self._convert_input(input_).to_messages()
        o_series = _O_SERIES.match(self.model_name or "")
        plain = None if o_series else plain_dicts(messages, self._resources)
        payload = super()._get_request_payload(
            [] if plain is not None else messages, stop=stop, **kwargs
        )
        if "messages" not in payload:  # the Responses API: no chat messages to carry
            return super()._get_request_payload(messages, stop=stop, **kwargs)
        extra_body = payload.get("extra_body") or {}
        payload["extra_body"] = {
            **extra_body,
            "messages": plain if plain is not None else payload["messages"],
        }
        payload["messages"] = []
        return payload

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """ChatOpenAI's plain (non-streaming, chat completions) call, with the reply converted
        in the event loop: ChatOpenAI converts it in a worker thread, a thread hop per call
        that a busy loop pays in CPU and, waiting for the lock, in latency. The reply is
        converted from its JSON: the SDK's typed model of it would only be dumped back to
        the same dict. Structured output, the Responses API and response headers take
        ChatOpenAI's own path."""
        payload = self._get_request_payload(messages, stop=stop, **kwargs)
        own_path = "response_format" in payload or self._use_responses_api(payload)
        if own_path or self.include_response_headers or self._uses_gateway:
            return await super()._agenerate(messages, stop, run_manager, **kwargs)
        try:
            raw = await self.async_client.with_raw_response.create(**payload)
        except openai.BadRequestError as error:
            _handle_openai_bad_request(error)
            raise
        except openai.APIError as error:
            _handle_openai_api_error(error)
            raise
        try:
            response = raw.http_response.json()
        except ValueError:  # not JSON: the SDK's own reading, and ChatOpenAI's error for it
            response = raw.parse()
        return self._create_chat_result(response, {})


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
    resources: RunResources | None = None,
) -> ChatOpenAI:
    """A ``ChatOpenAI`` for ``role``; unset context fields resolve from env and ``.env``.

    Built once per run and settings (env and ``.env`` are read then): ``resources`` default
    to those of the run the calling node belongs to (see ``run_resources``)."""
    if resources is None:
        resources = run_resources(context=context, requests_per_minute=context.requests_per_minute)
    given = (
        context.api_key,
        context.base_url,
        context.model,
        getattr(context, f"{role}_model", None),
    )
    key = (role, *given, context.request_timeout, context.max_retries, temperature, max_tokens)
    return resources.model(key, lambda: _build(context, role, temperature, max_tokens, resources))


def _build(
    context: ModelContext,
    role: Role,
    temperature: float,
    max_tokens: int,
    resources: RunResources,
) -> RunChatOpenAI:
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
    return _chat_openai(spec, resources)


def _chat_openai(spec: _ModelSpec, resources: RunResources) -> RunChatOpenAI:
    # Every request of the run (the client's retries included) goes through the run's one
    # HTTP client and so through its throttle.
    extra_body = {"thinking": {"type": "disabled"}} if is_mimo(spec.base_url) else None
    if not is_mimo(spec.base_url) and urlparse(spec.base_url).hostname != "api.openai.com":
        # ChatOpenAI sends only max_completion_tokens; llama.cpp-style servers read max_tokens
        # and would otherwise generate until the context is full.
        extra_body = {"max_tokens": spec.max_tokens}
    model = RunChatOpenAI(
        base_url=spec.base_url,
        api_key=spec.api_key,
        model=spec.model,
        temperature=spec.temperature,
        max_tokens=spec.max_tokens,
        timeout=spec.timeout,
        max_retries=spec.max_retries,
        stream_usage=True,
        extra_body=extra_body,
        http_async_client=resources.http_client(),
        # Only the assistant's reply is ever shown live; other roles never pay for streaming.
        disable_streaming=not spec.streams,
    )
    model._levels = resources.levels
    model._resources = resources
    # ChatOpenAI's own async client, made again from the settings it resolved, as the SDK
    # client class that splices in the encoded messages.
    model.root_async_client = RunAsyncOpenAI(
        api_key=spec.api_key,
        organization=model.openai_organization,
        base_url=model.openai_api_base,
        timeout=model.request_timeout,
        max_retries=model.max_retries,
        default_headers=model.default_headers,
        default_query=model.default_query,
        http_client=model.http_async_client,
    )
    model.async_client = model.root_async_client.chat.completions
    return model


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
