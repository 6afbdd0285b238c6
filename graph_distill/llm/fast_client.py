"""The model client's fast path: the one place that uses private openai, langchain-openai and
httpx APIs. Everything here is an optimisation of the stock path (a stock ``ChatOpenAI`` on
the throttled httpx client of ``graph_distill.llm.throttle``): same request bytes, same
replies, less of this process's time per call at high concurrency.

- ``FastChatOpenAI`` hands the messages to the SDK through ``extra_body``, so the SDK's
  recursive transform of every message (which changes nothing for chat messages yet cost
  about 0.25 ms per message per call) never sees them; plain text messages are converted as
  ChatOpenAI converts them (a copy of its rule, checked against it at start-up).
- ``RunAsyncOpenAI`` builds such a body from each message's JSON, encoded once per run,
  rather than encoding the whole history again on every call.
- ``fast_http_client`` sends through the SDK's aiohttp transport (httpx's pool checks every
  pooled connection on each request), mapping the failures that transport reports as
  timeouts back to what they are.

``contract_problem`` checks, when a run starts, that every internal used here is there with
the shape it is used with; if one is not, the run takes the stock path and says so in one line.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx2
import openai
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import PrivateAttr

from graph_distill.llm.throttle import RunThrottle, ThrottledTransport, proxy_mounts

if TYPE_CHECKING:
    from openai._models import FinalRequestOptions

    from graph_distill.llm.resources import RunResources


@dataclass(frozen=True)
class Internal:
    """A private API the fast path uses: ``name`` (dotted, from ``module``) of ``package``,
    with these leading parameters (when callable) and these attributes or fields."""

    package: str
    module: str
    name: str
    parameters: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()


INTERNALS: tuple[Internal, ...] = (
    Internal("openai", "openai._base_client", "_merge_mappings", ("obj1", "obj2")),
    Internal("openai", "openai._utils._json", "openapi_dumps", ("obj",)),
    Internal(
        "openai",
        "openai._models",
        "FinalRequestOptions",
        attributes=("json_data", "extra_json", "content", "files", "model_copy"),
    ),
    Internal(
        "openai", "openai", "AsyncOpenAI._build_request", ("self", "options", "retries_taken")
    ),
    Internal(
        "openai",
        "openai._vendor.httpx_aiohttp",
        "AiohttpTransport",
        ("verify", "cert", "trust_env", "http1", "http2", "limits", "proxy"),
        ("handle_async_request", "aclose"),
    ),
    Internal(
        "langchain-openai",
        "langchain_openai",
        "ChatOpenAI._get_request_payload",
        ("self", "input_", "stop", "kwargs"),
    ),
    Internal(
        "langchain-openai",
        "langchain_openai",
        "ChatOpenAI",
        attributes=("root_async_client", "async_client", "http_async_client", "extra_body"),
    ),
    Internal(
        "langchain-openai",
        "langchain_openai.chat_models.base",
        "_convert_message_to_dict",
        ("message",),
    ),
    Internal(
        "langchain-core",
        "langchain_core.language_models",
        "BaseChatModel._convert_input",
        ("self", "model_input"),
    ),
)


def _find(internal: Internal) -> Any:
    """The object ``internal`` names; AttributeError or ImportError when it is not there."""
    found: Any = importlib.import_module(internal.module)
    for part in internal.name.split("."):
        found = getattr(found, part)
    return found


def _shape_problem(internal: Internal, found: Any) -> str | None:
    if internal.parameters:
        try:
            names = tuple(inspect.signature(found).parameters)
        except (TypeError, ValueError):
            return "has no signature"
        if names[: len(internal.parameters)] != internal.parameters:
            return f"takes ({', '.join(names)}), not ({', '.join(internal.parameters)})"
    fields = getattr(found, "model_fields", {})
    missing = [
        name for name in internal.attributes if name not in fields and not hasattr(found, name)
    ]
    return f"has no {', '.join(missing)}" if missing else None


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "(not installed)"


def contract_problem(internals: Sequence[Internal] = INTERNALS) -> str | None:
    """One plain line naming the first internal that is missing or shaped otherwise (and its
    package's version), or the conversion rule that no longer agrees; None when all hold."""
    for internal in internals:
        try:
            problem = _shape_problem(internal, _find(internal))
        except (ImportError, AttributeError):
            problem = "is missing"
        if problem:
            where = f"{internal.module}.{internal.name}"
            return _fallback_line(internal.package, f"{where} {problem}")
    if not _conversion_agrees():
        return _fallback_line(
            "langchain-openai", "ChatOpenAI converts plain text messages another way"
        )
    return None


def _fallback_line(package: str, problem: str) -> str:
    return (
        f"{package} {_version(package)}: {problem}; using the stock model client "
        "(GRAPH_DISTILL_STOCK=1 chooses it without this check)"
    )


_SAMPLES: tuple[BaseMessage, ...] = (
    SystemMessage("rules"),
    HumanMessage('a "quoted" \u00e9 line\n', id="m0"),
    AIMessage("", id="m1"),
)


def _conversion_agrees() -> bool:
    """Whether ChatOpenAI converts and the SDK encodes plain messages as this module does."""
    from langchain_openai.chat_models.base import _convert_message_to_dict
    from openai._utils._json import openapi_dumps

    for message in _SAMPLES:
        plain = _plain(message)
        if plain is None or plain[0] != _convert_message_to_dict(message):
            return False
        if plain[1] != json.dumps(plain[0], ensure_ascii=False, separators=(",", ":")).encode():
            return False
    return openapi_dumps({"a": [1, "b"]}) == b'{"a":[1,"b"]}'


# ------------------------------------------------------------------ the chat model

_PLAIN_ROLES: dict[type[BaseMessage], str] = {
    HumanMessage: "user",
    AIMessage: "assistant",
    SystemMessage: "system",
}
# Where the messages go in a body before their JSON is spliced in (no text has it).
MESSAGES_MARK = "\0graph-distill: the messages\0"
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
    from openai._utils._json import openapi_dumps

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
    from openai._base_client import _merge_mappings
    from openai._utils._json import openapi_dumps

    extra, data = options.extra_json, options.json_data
    messages = extra.get("messages") if isinstance(extra, Mapping) else None
    if not isinstance(messages, EncodedMessages) or not isinstance(data, Mapping):
        return None
    if options.content is not None or options.files is not None:
        return None
    merged = _merge_mappings(data, extra)
    merged["messages"] = MESSAGES_MARK
    body = openapi_dumps(merged)
    mark = openapi_dumps(MESSAGES_MARK)
    if body.count(mark) != 1:
        return None
    return body.replace(mark, b"[" + b",".join(messages.encoded) + b"]")


def _as_messages(input_: LanguageModelInput) -> list[BaseMessage] | None:
    """``input_`` when it already is a list of messages (as the chat model's own calls pass
    it), saving a second pass of conversion."""
    if isinstance(input_, list) and all(isinstance(m, BaseMessage) for m in input_):
        return input_
    return None


class FastChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` whose requests cost the same at any history length: the messages travel
    in ``extra_body``, which the SDK merges into the body unchanged, in the place ``messages``
    has there, so the bytes on the wire stay the same on every path to the SDK (create,
    with_raw_response, parse, streaming), and the model's own ``extra_body`` entries are kept.
    Plain text messages are converted directly (as ChatOpenAI would); anything else goes
    through ChatOpenAI's own conversion. Every call is ChatOpenAI's own otherwise."""

    _resources: RunResources | None = PrivateAttr(default=None)

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


def attach(model: FastChatOpenAI, resources: RunResources) -> FastChatOpenAI:
    """``model`` on the client that splices in the encoded messages: ChatOpenAI's own async
    client, made again from the settings it resolved, as ``RunAsyncOpenAI``."""
    model._resources = resources
    key = model.openai_api_key
    model.root_async_client = RunAsyncOpenAI(
        api_key=key.get_secret_value() if key is not None else None,
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


# ------------------------------------------------------------------ the HTTP client


def fast_http_client(throttle: RunThrottle) -> httpx2.AsyncClient:
    """The SDK's aiohttp-based async HTTP client, throttled: much less of this process's time
    per request than httpx's pool. Its session must be closed in the event loop that used it."""
    from openai._vendor.httpx_aiohttp import AiohttpTransport

    def transport_for(proxy: str | None) -> httpx2.AsyncBaseTransport:
        inner = AiohttpTransport(
            limits=openai.DEFAULT_CONNECTION_LIMITS,
            proxy=httpx2.Proxy(proxy) if proxy else None,
        )
        return ThrottledTransport(throttle, inner, aiohttp_plain_error)

    return openai.DefaultAioHttpClient(
        transport=transport_for(None), mounts=proxy_mounts(transport_for)
    )


def aiohttp_plain_error(error: Exception) -> Exception:
    """The httpx error a failure is: the SDK's aiohttp transport reports any failed
    connection (refused, dropped, reset) as a connect timeout, which it is not."""
    cause = error.__cause__
    if not isinstance(error, httpx2.TimeoutException) or not isinstance(
        cause, aiohttp.ClientConnectionError
    ):
        return error
    if isinstance(cause, aiohttp.ServerTimeoutError):
        return error
    if isinstance(cause, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(str(cause))
    if isinstance(cause, aiohttp.ServerDisconnectedError):
        return httpx2.RemoteProtocolError(str(cause) or "the server closed the connection")
    return httpx2.ReadError(str(cause))
