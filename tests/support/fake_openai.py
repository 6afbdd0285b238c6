"""A fake OpenAI-compatible chat server on 127.0.0.1 for tests and benchmarks.

Real clients (``openai``, ``langchain_openai.ChatOpenAI``) talk to it over HTTP, so retries,
streaming, usage parsing and structured output run through the same code as in production.
Only the standard library and ``graph_distill.llm.tokens`` are used.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
import socket
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from graph_distill.llm.tokens import count_tokens, encoding

Responder = Callable[[dict[str, Any]], str]

FAULT_KINDS = ("401", "429", "500", "drop", "broken_json", "empty")
CACHE_BLOCK_TOKENS = 64
REPLY_PRIMING_TOKENS = 3
STOP_TIMEOUT_SECONDS = 5.0
MAX_SCHEMA_DEPTH = 6
WORDS_PER_STREAM_CHUNK = 3

_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "401": (401, "invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    "429": (429, "rate_limit_error", "rate_limit_exceeded", "Rate limit reached, retry later."),
    "500": (500, "server_error", None, "The server had an error processing your request."),
    "400": (400, "invalid_request_error", None, "Unsupported request."),
    "404": (404, "invalid_request_error", "not_found", "Unknown route."),
}
_ADJECTIVES = (
    "careful quiet layered brittle gradual sharp modest noisy sparse tidy hidden early "
    "costly fragile stable rough subtle narrow broad partial steady clumsy vivid patient"
).split()
_NOUNS = (
    "budget schedule kernel garden ledger protocol recipe bridge sensor draft harbor "
    "cache lesson archive compass engine fabric glacier journal lantern market orbit "
    "pipeline quarry rhythm spindle thicket voyage workshop"
).split()
_VERBS = (
    "reshapes delays anchors exposes balances trims absorbs outlines stretches "
    "untangles weighs sharpens loosens redirects measures cushions"
).split()
_TEMPLATES = (
    "A {adj} {noun} {verb} the {noun2} more than people expect.",
    "Consider how the {noun} {verb} every {adj} {noun2} around it.",
    "In practice a {adj} {noun2} rarely {verb} the {noun} on its own.",
    "One option: let the {noun} set the pace, then check the {adj} {noun2}.",
    "What matters most is whether the {noun2} stays {adj} once the {noun} {verb} it.",
    "Try writing down which {noun} {verb} the {adj} {noun2} first.",
)
_SPLIT_WORDS = re.compile(r"\S+\s*|\s+")
_FENCED_JSON = re.compile(r"```(?:json)?\s*(\{.*?\})\s*```", re.DOTALL)


def message_text(message: Mapping[str, Any]) -> str:
    """The text a message contributes to the prompt: content parts plus any tool calls."""
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    calls = message.get("tool_calls") or []
    call_text = "".join(json.dumps(call.get("function", {}), sort_keys=True) for call in calls)
    return str(content or "") + call_text


def due_tool(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The function a reply must call, or None when a text reply is due.

    After a tool result with ``tool_choice`` auto/unset the model answers in text, so agent loops
    driven by this server end.
    """
    tools = [tool["function"] for tool in body.get("tools") or [] if tool.get("type") == "function"]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return None
    if isinstance(choice, dict):
        wanted = choice.get("function", {}).get("name")
        return next((tool for tool in tools if tool.get("name") == wanted), tools[0])
    messages = body.get("messages") or [{}]
    if choice in (None, "auto") and messages[-1].get("role") == "tool":
        return None
    return tools[0]


def requested_schema(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The JSON schema the reply must fit: the due tool's parameters or a json_schema format."""
    tool = due_tool(body)
    if tool is not None:
        return tool.get("parameters") or {"type": "object", "properties": {}}
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return response_format.get("json_schema", {}).get("schema") or {"type": "object"}
    return None


def _response_format_type(body: Mapping[str, Any]) -> str | None:
    return (body.get("response_format") or {}).get("type")


def schema_in_prompt(body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The latest fenced JSON schema in the messages (format instructions for json_object mode)."""
    for message in reversed(body.get("messages") or []):
        for block in reversed(_FENCED_JSON.findall(message_text(message))):
            with contextlib.suppress(ValueError):
                schema = json.loads(block)
                if isinstance(schema, dict) and "properties" in schema:
                    return schema
    return None


@lru_cache(maxsize=4096)
def _message_tokens(role: str, text: str) -> tuple[int, ...]:
    return tuple(encoding().encode_ordinary(f"<|{role}|>\n{text}"))


def prompt_tokens(messages: Sequence[Mapping[str, Any]]) -> list[int]:
    """The serialized prompt (role header + text per message, in order) as tokens."""
    tokens: list[int] = []
    for message in messages:
        tokens.extend(_message_tokens(str(message.get("role", "")), message_text(message)))
    return tokens


class SchemaFiller:
    """Builds a JSON instance of a schema (local $refs, anyOf/allOf, bounds) from a seeded rng."""

    def __init__(self, root: Mapping[str, Any], rng: random.Random, words: Sequence[str]) -> None:
        self._root = root
        self._rng = rng
        self._words = list(words) or ["note"]
        self._fillers: dict[str, Callable[[Mapping[str, Any], int], Any]] = {
            "object": self._object,
            "array": self._array,
            "string": self._string,
            "integer": self._integer,
            "number": self._number,
            "boolean": lambda _schema, _depth: self._rng.random() < 0.5,
            "null": lambda _schema, _depth: None,
        }

    def fill(self, schema: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
        schema = self._resolve(self._root if schema is None else schema)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return self._rng.choice(schema["enum"])
        options = schema.get("anyOf") or schema.get("oneOf")
        if options:
            return self.fill(self._pick_option(options, depth), depth)
        if schema.get("allOf"):
            return self.fill(self._merge_all_of(schema), depth)
        return self._fillers[_schema_type(schema)](schema, depth)

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in schema:
            target: Any = self._root
            for part in schema["$ref"].removeprefix("#/").split("/"):
                if part:
                    target = target[part.replace("~1", "/").replace("~0", "~")]
            schema = target
        return schema

    def _pick_option(self, options: Sequence[Mapping[str, Any]], depth: int) -> Mapping[str, Any]:
        resolved = [self._resolve(option) for option in options]
        non_null = [option for option in resolved if _schema_type(option) != "null"]
        if not non_null or (depth >= MAX_SCHEMA_DEPTH and len(non_null) < len(resolved)):
            return {"type": "null"}
        return non_null[0]

    def _merge_all_of(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in map(self._resolve, schema["allOf"]):
            properties = {**merged.get("properties", {}), **part.get("properties", {})}
            required = [*merged.get("required", []), *part.get("required", [])]
            merged.update(part)
            if properties:
                merged["properties"] = properties
            if required:
                merged["required"] = required
        return merged

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties: Mapping[str, Any] = schema.get("properties") or {}
        required = set(schema.get("required") or ())
        keep_optional = depth < MAX_SCHEMA_DEPTH
        instance = {
            name: self.fill(sub, depth + 1)
            for name, sub in properties.items()
            if keep_optional or name in required
        }
        extra = schema.get("additionalProperties")
        if not properties and keep_optional and extra:
            value_schema = extra if isinstance(extra, Mapping) else {"type": "string"}
            instance[self._rng.choice(self._words)] = self.fill(value_schema, depth + 1)
        return instance

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 2)))
        wanted = self._rng.randint(1, 2) if depth < MAX_SCHEMA_DEPTH else 0
        count = min(max(wanted, low), high)
        return [self.fill(schema.get("items") or {}, depth + 1) for _ in range(count)]

    def _string(self, schema: Mapping[str, Any], _depth: int) -> str:
        fmt = schema.get("format")
        if fmt == "date-time":
            return f"2026-01-{self._rng.randint(10, 28)}T{self._rng.randint(10, 23)}:15:00Z"
        if fmt == "date":
            return f"2026-01-{self._rng.randint(10, 28)}"
        text = " ".join(self._rng.choice(self._words) for _ in range(self._rng.randint(2, 6)))
        text = text.ljust(int(schema.get("minLength", 0)), ".")
        return text[: schema["maxLength"]] if "maxLength" in schema else text

    def _integer(self, schema: Mapping[str, Any], _depth: int) -> int:
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1) + 1)
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 101) - 1)
        return self._rng.randint(int(min(low, high)), int(high))

    def _number(self, schema: Mapping[str, Any], _depth: int) -> float:
        low = float(schema.get("minimum", schema.get("exclusiveMinimum", 0.0)))
        high = float(schema.get("maximum", schema.get("exclusiveMaximum", low + 100.0)))
        return round(self._rng.uniform(low, high), 2)


def _schema_type(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        return next((k for k in kind if k != "null"), "null")
    if kind:
        return str(kind)
    if "properties" in schema or "additionalProperties" in schema:
        return "object"
    return "array" if "items" in schema else "string"


def _last_message_words(body: Mapping[str, Any]) -> list[str]:
    messages = body.get("messages") or [{}]
    return re.findall(r"[A-Za-z0-9']+", message_text(messages[-1]))


def _sentence(rng: random.Random, extra_nouns: Sequence[str]) -> str:
    nouns = [*_NOUNS, *extra_nouns]
    return rng.choice(_TEMPLATES).format(
        adj=rng.choice(_ADJECTIVES),
        noun=rng.choice(nouns),
        noun2=rng.choice(nouns),
        verb=rng.choice(_VERBS),
    )


class DefaultResponder:
    """Deterministic replies that never repeat: prose that quotes the last message, or JSON that
    fits the requested schema (tool parameters, ``json_schema``, or for ``json_object`` a fenced
    schema in the prompt), else a ``{"reply", "number"}`` object for ``json_object``."""

    def __init__(self, seed: int = 0) -> None:
        self._seed = seed
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str:
        with self._lock:
            number = next(self._counter)
        rng = random.Random(f"{self._seed}:{number}")
        words = _last_message_words(body)
        schema = requested_schema(body)
        if schema is None and _response_format_type(body) == "json_object":
            schema = schema_in_prompt(body)
        if schema is not None:
            return json.dumps(SchemaFiller(schema, rng, [*words, *_NOUNS]).fill())
        text = self._prose(number, rng, words)
        if _response_format_type(body) == "json_object":
            return json.dumps({"reply": text, "number": number})
        return text

    @staticmethod
    def _prose(number: int, rng: random.Random, words: Sequence[str]) -> str:
        topic = " ".join(words[:6]) or "where we left off"
        long_words = [word.lower() for word in words if len(word) > 4][:12]
        sentences = [_sentence(rng, long_words) for _ in range(rng.randint(2, 4))]
        return f"Reply {number}, on “{topic}”: " + " ".join(sentences)


@dataclass(frozen=True)
class FaultRates:
    """Random faults: each chat request rolls once on ``random.Random(seed)``, in arrival order."""

    rate_429: float = 0.0
    rate_500: float = 0.0
    rate_drop: float = 0.0
    rate_broken_json: float = 0.0
    rate_empty: float = 0.0
    seed: int = 0
    retry_after: float = 1.0

    def __post_init__(self) -> None:
        rates = [rate for _kind, rate in self.table()]
        if any(rate < 0 for rate in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")

    def table(self) -> tuple[tuple[str, float], ...]:
        return (
            ("429", self.rate_429),
            ("500", self.rate_500),
            ("drop", self.rate_drop),
            ("broken_json", self.rate_broken_json),
            ("empty", self.rate_empty),
        )

    def pick(self, roll: float) -> str | None:
        """The fault kind a roll in [0, 1) lands on, or None."""
        edge = 0.0
        for kind, rate in self.table():
            edge += rate
            if roll < edge:
                return kind
        return None


@dataclass(frozen=True)
class _Fault:
    kind: str
    retry_after: float = 1.0
    after_chunks: int = 2
    message: str | None = None


class PrefixCache:
    """Longest cached prompt prefix in whole blocks, via chained block hashes (as vLLM does).

    Bounded LRU over blocks, so lookups stay cheap however many requests went before.
    """

    def __init__(self, block_tokens: int = CACHE_BLOCK_TOKENS, max_blocks: int = 200_000) -> None:
        self._block = block_tokens
        self._max_blocks = max_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def match_and_store(self, tokens: Sequence[int]) -> int:
        """Tokens of ``tokens`` already cached (a multiple of the block size); stores the rest."""
        chain, cached, hitting = 0, 0, True
        for start in range(0, len(tokens) - self._block + 1, self._block):
            chain = hash((chain, tuple(tokens[start : start + self._block])))
            hitting = hitting and chain in self._blocks
            if hitting:
                cached += self._block
                self._blocks.move_to_end(chain)
            else:
                self._blocks[chain] = None
        while len(self._blocks) > self._max_blocks:
            self._blocks.popitem(last=False)
        return cached


def _pieces(text: str) -> list[str]:
    words = _SPLIT_WORDS.findall(text)
    step = WORDS_PER_STREAM_CHUNK
    return ["".join(words[start : start + step]) for start in range(0, len(words), step)]


@dataclass(frozen=True)
class _Reply:
    number: int
    model: str
    text: str
    tool_name: str | None
    usage: dict[str, Any]
    cut: bool = False
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def finish_reason(self) -> str:
        if self.cut:
            return "length"
        return "stop" if self.tool_name is None else "tool_calls"

    @property
    def _call_id(self) -> str:
        return f"call_fake_{self.number}"

    def completion(self) -> dict[str, Any]:
        if self.tool_name is None:
            message: dict[str, Any] = {"role": "assistant", "content": self.text}
        else:
            function = {"name": self.tool_name, "arguments": self.text}
            call = {"id": self._call_id, "type": "function", "function": function}
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        choice = {"index": 0, "message": message, "finish_reason": self.finish_reason}
        return {**self._envelope("chat.completion"), "choices": [choice], "usage": self.usage}

    def chunks(self, include_usage: bool) -> Iterator[dict[str, Any]]:
        extra = {"usage": None} if include_usage else {}
        yield self._chunk(self._first_delta(), None, extra)
        for piece in _pieces(self.text):
            yield self._chunk(self._piece_delta(piece), None, extra)
        yield self._chunk({}, self.finish_reason, extra)
        if include_usage:
            yield {**self._envelope("chat.completion.chunk"), "choices": [], "usage": self.usage}

    def _first_delta(self) -> dict[str, Any]:
        if self.tool_name is None:
            return {"role": "assistant", "content": ""}
        function = {"name": self.tool_name, "arguments": ""}
        call = {"index": 0, "id": self._call_id, "type": "function", "function": function}
        return {"role": "assistant", "content": None, "tool_calls": [call]}

    def _piece_delta(self, piece: str) -> dict[str, Any]:
        if self.tool_name is None:
            return {"content": piece}
        return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}

    def _chunk(
        self, delta: dict[str, Any], finish_reason: str | None, extra: dict[str, Any]
    ) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {**self._envelope("chat.completion.chunk"), "choices": [choice], **extra}

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-fake-{self.number}",
            "object": kind,
            "created": self.created,
            "model": self.model,
        }


@dataclass(frozen=True)
class RecordedRequest:
    """One chat completion request as received, and the fault (if any) it was answered with."""

    body: dict[str, Any]
    headers: dict[str, str]
    received_at: float
    fault: str | None
    raw: bytes = b""  # the body's bytes as sent
    answered_at: float | None = None  # when the answer was sent whole (or the connection cut)


def _chat_body(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw or b"null")
    except ValueError:
        return None
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return None
    return body


def _error_body(kind: str, message: str | None) -> tuple[int, dict[str, Any]]:
    status, error_type, code, default_message = _ERRORS[kind]
    error = {"message": message or default_message, "type": error_type, "param": None, "code": code}
    return status, {"error": error}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    # Headers and body go out in separate writes; with Nagle on, each reply waits for a delayed ACK.
    disable_nagle_algorithm = True
    server: _HTTPServer

    @property
    def fake(self) -> FakeOpenAIServer:
        return self.server.fake

    def setup(self) -> None:
        super().setup()
        self.fake._track(self.connection)

    def finish(self) -> None:
        try:
            with contextlib.suppress(OSError):
                super().finish()
        finally:
            self.fake._untrack(self.connection)

    def handle(self) -> None:
        # Hang-ups (client gone, server stopping, scripted drops) end the connection quietly.
        with contextlib.suppress(OSError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._send_json(*_error_body("404", f"no route {self.path}"))
        elif not self.fake._authorized(self.headers.get("Authorization")):
            self._send_json(*_error_body("401", None))
        else:
            model = {"id": self.fake.model, "object": "model", "created": 0, "owned_by": "fake"}
            self._send_json(200, {"object": "list", "data": [model]})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._read_body()
            self._send_json(*_error_body("404", f"no route {self.path}"))
            return
        received_at = time.monotonic()  # before the body is read and parsed: the client's part
        raw = self._read_body()
        body = _chat_body(raw)
        if body is None:
            self._send_json(*_error_body("400", "body must be a JSON object with 'messages'"))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        fault = self.fake._admit(body, headers, raw, received_at)
        try:
            self._answer(body, fault)
        finally:
            self.fake._answered(body)

    def _answer(self, body: dict[str, Any], fault: _Fault | None) -> None:
        kind = fault.kind if fault else None
        if fault is not None and kind in _ERRORS:
            extra = {"Retry-After": f"{fault.retry_after:g}"} if kind == "429" else {}
            self._send_json(*_error_body(fault.kind, fault.message), headers=extra)
        elif not self.fake._pause(self.fake.latency) or (kind == "drop" and not body.get("stream")):
            self._drop()
        elif body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chunks = self.fake._reply(body, kind).chunks(include_usage)
            self._stream(chunks, fault.after_chunks if fault and kind == "drop" else None)
        else:
            self._send_json(200, self.fake._reply(body, kind).completion())

    def _read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send_json(
        self, status: int, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks: Iterator[dict[str, Any]], drop_after: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, chunk in enumerate(chunks):
            if index == drop_after or not self.fake._pause(self.fake.chunk_delay):
                self._drop()
                return
            self._write_chunk(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        if drop_after is not None:
            self._drop()
            return
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%X\r\n%s\r\n" % (len(data), data))

    def _drop(self) -> None:
        """Close without finishing the reply: mid-stream the client sees a truncated body."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, fake: FakeOpenAIServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake


class FakeOpenAIServer:
    """OpenAI-compatible ``/v1/chat/completions`` and ``/v1/models`` on 127.0.0.1 (free port).

    One thread per connection, so concurrent requests sleep ``latency`` side by side; streams also
    wait ``chunk_delay`` before each chunk. Every reply carries ``usage`` with
    ``prompt_tokens_details.cached_tokens`` from a simulated prefix cache (``prefix_cache``).
    A request is answered, in this order of precedence: 401 if ``require_key`` is set and the
    bearer differs; the next ``enqueue_fault`` fault; a fault rolled from ``faults``; 400 if
    ``refuse_json_schema``/``refuse_tools`` applies; else the ``responder``'s text (as tool-call
    arguments when a tool call is due). With ``honor_max_tokens`` that text is cut to the
    request's ``max_completion_tokens``/``max_tokens`` with ``finish_reason`` "length".
    """

    def __init__(
        self,
        responder: Responder | None = None,
        *,
        latency: float = 0.0,
        chunk_delay: float = 0.0,
        refuse_json_schema: bool = False,
        refuse_tools: bool = False,
        require_key: str | None = None,
        faults: FaultRates | None = None,
        prefix_cache: bool = True,
        honor_max_tokens: bool = False,
        model: str = "fake-model",
    ) -> None:
        self.responder: Responder = responder or DefaultResponder()
        self.latency = latency
        self.chunk_delay = chunk_delay
        self.refuse_json_schema = refuse_json_schema
        self.refuse_tools = refuse_tools
        self.require_key = require_key
        self.honor_max_tokens = honor_max_tokens
        self.model = model
        self._fault_rates = faults
        self._dice = random.Random(faults.seed if faults else 0)
        self._cache = PrefixCache() if prefix_cache else None
        self._lock = threading.Lock()
        self._records: list[RecordedRequest] = []
        self._scripted: deque[_Fault] = deque()
        self._fault_counts: Counter[str] = Counter()
        self._retry_after_total = 0.0
        self._stats = Counter(prompt_tokens=0, cached_tokens=0, completion_tokens=0, calls=0)
        self._reply_numbers = itertools.count(1)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._idle = threading.Condition()
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> Self:
        if self._http is not None:
            raise RuntimeError("server already started")
        self._stopping.clear()
        self._http = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-openai-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut open connections (streams included) and wait for handlers."""
        http, thread = self._http, self._thread
        if http is None or thread is None:
            return
        with self._idle:
            self._stopping.set()
            for connection in self._connections:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
        http.shutdown()
        with self._idle:
            self._idle.wait_for(lambda: not self._connections, timeout=STOP_TIMEOUT_SECONDS)
        http.server_close()
        thread.join(STOP_TIMEOUT_SECONDS)
        self._http = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- public view

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("server not started")
        return int(self._http.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def records(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._records)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Chat completion bodies, in arrival order."""
        return [record.body for record in self.records]

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """Headers (lower-case names) of each chat completion request, aligned with ``requests``."""
        return [record.headers for record in self.records]

    @property
    def calls(self) -> int:
        """Chat completion requests received, faulted ones included."""
        with self._lock:
            return len(self._records)

    @property
    def stats(self) -> dict[str, int]:
        """Usage totals over replies that reported usage; ``calls`` counts those replies."""
        with self._lock:
            return dict(self._stats)

    @property
    def fault_counts(self) -> dict[str, int]:
        """Error or fault answers by kind: FAULT_KINDS, plus "400" for refusals."""
        with self._lock:
            return dict(self._fault_counts)

    @property
    def retry_after_total(self) -> float:
        with self._lock:
            return self._retry_after_total

    def enqueue_fault(self, kind: str, *, retry_after: float = 1.0, after_chunks: int = 2) -> None:
        """Answer the next not-yet-faulted chat request with ``kind`` (one of FAULT_KINDS).

        ``retry_after`` is the 429's Retry-After in seconds; ``after_chunks`` is how many SSE
        chunks a dropped stream sends before the connection is cut.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        with self._lock:
            self._scripted.append(_Fault(kind, retry_after=retry_after, after_chunks=after_chunks))

    # -- used by the handler

    def _track(self, connection: socket.socket) -> None:
        with self._idle:
            if self._stopping.is_set():
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            else:
                self._connections.add(connection)

    def _untrack(self, connection: socket.socket) -> None:
        with self._idle:
            self._connections.discard(connection)
            self._idle.notify_all()

    def _pause(self, seconds: float) -> bool:
        """Sleep unless stopping; False when the server is stopping."""
        if seconds > 0:
            return not self._stopping.wait(seconds)
        return not self._stopping.is_set()

    def _authorized(self, authorization: str | None) -> bool:
        return self.require_key is None or authorization == f"Bearer {self.require_key}"

    def _answered(self, body: dict[str, Any]) -> None:
        with self._lock:
            for index in range(len(self._records) - 1, -1, -1):
                if self._records[index].body is body:
                    self._records[index] = replace(
                        self._records[index], answered_at=time.monotonic()
                    )
                    return

    def _admit(
        self, body: dict[str, Any], headers: dict[str, str], raw: bytes, received_at: float
    ) -> _Fault | None:
        with self._lock:
            roll = self._dice.random()
            fault = self._decide(body, headers, roll)
            kind = fault.kind if fault else None
            self._records.append(RecordedRequest(body, headers, received_at, kind, raw))
            if fault is not None:
                self._fault_counts[fault.kind] += 1
                if fault.kind == "429":
                    self._retry_after_total += fault.retry_after
            return fault

    def _decide(self, body: dict[str, Any], headers: dict[str, str], roll: float) -> _Fault | None:
        if not self._authorized(headers.get("authorization")):
            return _Fault("401")
        if self._scripted:
            return self._scripted.popleft()
        rates = self._fault_rates
        kind = rates.pick(roll) if rates else None
        if rates and kind:
            return _Fault(kind, retry_after=rates.retry_after)
        return self._refusal(body)

    def _refusal(self, body: Mapping[str, Any]) -> _Fault | None:
        if self.refuse_json_schema and _response_format_type(body) == "json_schema":
            message = "response_format type json_schema is not supported by this server"
            return _Fault("400", message=message)
        if self.refuse_tools and body.get("tools"):
            return _Fault("400", message="tools are not supported by this server")
        return None

    def _reply(self, body: dict[str, Any], kind: str | None) -> _Reply:
        tool = due_tool(body) if kind != "empty" else None
        text = self.responder(body) if kind != "empty" else ""
        if kind == "broken_json":
            text = text[: max(1, len(text) // 2)]
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        tokens = encoding().encode_ordinary(text) if self.honor_max_tokens and limit else []
        cut = len(tokens) > int(limit or 0)
        if cut:
            text = encoding().decode(tokens[: int(limit)])
        usage = self._account(body.get("messages") or [], text)
        with self._lock:
            number = next(self._reply_numbers)
        tool_name = str(tool.get("name", "")) if tool else None
        model = str(body.get("model", self.model))
        return _Reply(number, model, text, tool_name, usage, cut=cut)

    def _account(self, messages: Sequence[Mapping[str, Any]], completion_text: str) -> dict:
        tokens = prompt_tokens(messages)
        prompt = len(tokens) + REPLY_PRIMING_TOKENS
        completion = count_tokens(completion_text) if completion_text else 0
        with self._lock:
            cached = self._cache.match_and_store(tokens) if self._cache else 0
            self._stats.update(
                prompt_tokens=prompt, cached_tokens=cached, completion_tokens=completion, calls=1
            )
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
