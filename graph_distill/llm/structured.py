"""Structured (JSON) replies from any OpenAI-compatible server.

The cascade tries ``json_schema`` structured output, then JSON mode, then a plain prompt,
moving down a level only when the server refuses the request (400/422, as llama.cpp's server
does for ``json_schema``); a transient failure (5xx, dropped connection) is retried at the same
level by the client and never moves it. The level that worked is remembered per (base URL,
model) by the run (``LevelMemory``, held by the run's resources) so later calls skip the
refusals. Every reply goes through a tolerant parse; one that still does not
parse gets one repair call (or, when it was empty, one repeat of the request).

Callers must describe the expected JSON in their messages: JSON mode and plain prompts see only
the messages.
"""

from __future__ import annotations

import ast
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import openai
from langchain_core.exceptions import ContextOverflowError
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_openai import ChatOpenAI

from graph_distill.llm.prompting import render_prompt
from graph_distill.llm.usage import Usage, add_usage, empty_usage, usage_of


class Level(StrEnum):
    JSON_SCHEMA = "json_schema"
    # JSON mode constrained by a schema: llama-cpp-python's extension, which turns the schema
    # into a grammar, so even a tiny local model returns the right shape.
    JSON_OBJECT_SCHEMA = "json_object_schema"
    JSON_MODE = "json_mode"
    PROMPT = "prompt"


LEVELS = tuple(Level)
_REFUSALS = (openai.BadRequestError, openai.UnprocessableEntityError)
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_INTEGER = re.compile(r"-?\d+")
_MAX_START_POSITIONS = 20


@dataclass(frozen=True, kw_only=True)
class OutputSpec:
    """What a reply must be: a JSON object fitting ``schema`` (strict-mode compatible)."""

    name: str
    schema: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class StructuredReply:
    """``value`` is the coerced object, or None when every attempt failed (see ``error``)."""

    value: dict[str, Any] | None
    text: str
    usage: Usage
    level: Level | None
    error: str | None = None


# ---------------------------------------------------------------- level memory


def server_key(model: ChatOpenAI) -> tuple[str, str]:
    return (str(model.openai_api_base or ""), str(model.model_name))


class LevelMemory:
    """The highest level each server (base URL, model) has not refused, for one run."""

    def __init__(self) -> None:
        self._levels: dict[tuple[str, str], Level] = {}
        self._lock = threading.Lock()

    def working_level(self, model: ChatOpenAI) -> Level:
        with self._lock:
            return self._levels.get(server_key(model), Level.JSON_SCHEMA)

    def remember(self, model: ChatOpenAI, level: Level) -> None:
        with self._lock:
            known = self._levels.get(server_key(model), Level.JSON_SCHEMA)
            self._levels[server_key(model)] = max(known, level, key=LEVELS.index)


# ---------------------------------------------------------------- tolerant parsing


def json_values(text: str) -> Iterator[Any]:
    """Every JSON value found in ``text``, in order: code fences first, then the whole text
    from each opening bracket; trailing commas, raw line breaks inside strings (small models
    write them) and Python-style literals are forgiven."""
    decoder = json.JSONDecoder(strict=False)
    for candidate in [*_FENCE.findall(text), text]:
        starts = [match.start() for match in re.finditer(r"[{\[]", candidate)]
        for start in starts[:_MAX_START_POSITIONS]:
            piece = candidate[start:]
            for variant in dict.fromkeys((piece, _TRAILING_COMMA.sub(r"\1", piece))):
                try:
                    yield decoder.raw_decode(variant)[0]
                    break
                except ValueError:
                    pass
        literal = _python_literal(candidate)
        if literal is not None:
            yield literal


def _python_literal(text: str) -> Any:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = ast.literal_eval(text[start : end + 1])
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def coerce_to_schema(value: Any, schema: Mapping[str, Any]) -> Any:
    """``value`` bent to ``schema``: a lone value where a list is due becomes a list, a string
    where an object is due fills the object's first string field, numbers written as text
    become integers, unknown keys go and missing ones get empty values."""
    kind = schema.get("type")
    if kind == "object":
        return _coerce_object(value, schema)
    if kind == "array":
        return _coerce_array(value, schema.get("items") or {})
    if kind == "integer":
        return _coerce_integer(value)
    if kind == "string":
        return _coerce_string(value)
    return value


def _coerce_object(value: Any, schema: Mapping[str, Any]) -> dict[str, Any]:
    properties: Mapping[str, Mapping[str, Any]] = schema.get("properties") or {}
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, Mapping):
        text_field = next((n for n, s in properties.items() if s.get("type") == "string"), None)
        value = {text_field: value} if text_field and value is not None else {}
    given = {_key(str(name)): item for name, item in value.items()}
    return {
        name: coerce_to_schema(given.get(_key(name)), sub_schema)
        for name, sub_schema in properties.items()
    }


def _coerce_array(value: Any, item_schema: Mapping[str, Any]) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str) and item_schema.get("type") == "integer":
        return [int(number) for number in _INTEGER.findall(value)]
    items = value if isinstance(value, list) else [value]
    coerced = (coerce_to_schema(item, item_schema) for item in items)
    return [item for item in coerced if item is not None]


def _coerce_integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and (match := _INTEGER.search(value)):
        return int(match.group())
    return None


def _coerce_string(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Mapping | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def parse_structured(text: str, schema: Mapping[str, Any]) -> dict[str, Any]:
    """The first object in a reply with any of ``schema``'s fields, bent to ``schema``.
    Raises ValueError when there is none (truncated JSON does not count)."""
    known = {_key(name) for name in schema.get("properties") or {}}
    found = False
    for value in json_values(text):
        found = True
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, Mapping) and known & {_key(str(name)) for name in value}:
            return coerce_to_schema(value, schema)
    if not found:
        raise ValueError("no JSON object found in the reply")
    raise ValueError("the JSON in the reply has none of the expected fields")


# ---------------------------------------------------------------- the cascade


def is_refusal(error: openai.APIStatusError) -> bool:
    """The server will not take this request's form (as opposed to failing to answer it)."""
    if isinstance(error, _REFUSALS):
        return True
    # llama-cpp-python's server answers a json_schema response_format with a 500 validation error.
    return isinstance(error, openai.InternalServerError) and any(
        word in str(error.message) for word in ("response_format", "json_object")
    )


async def ainvoke_structured(
    model: ChatOpenAI,
    messages: Sequence[BaseMessage],
    spec: OutputSpec,
    levels: LevelMemory | None = None,
) -> StructuredReply:
    """Ask ``model`` for a JSON object fitting ``spec``, at the best level its server takes.

    Transient and authentication errors propagate (the node's retry policy handles them);
    refusals move down a level; everything else ends as a failed reply keeping the raw text.
    ``levels``: the run's memory of each server's level (see ``models.structured_levels``).
    """
    usage = empty_usage()
    refusals: list[str] = []
    if levels is None:  # nothing learnt is kept beyond this call
        levels = LevelMemory()
    start = LEVELS.index(levels.working_level(model))
    for level in LEVELS[start:]:
        try:
            message = await _ask(model, level, messages, spec)
        except ContextOverflowError as error:
            return StructuredReply(value=None, text="", usage=usage, level=level, error=str(error))
        except openai.APIStatusError as error:
            if not is_refusal(error):
                raise
            refusals.append(f"{level}: {error.message}")
            continue
        if refusals:  # only once a lower level works: a 400 may have another cause
            levels.remember(model, level)
        usage = add_usage(usage, usage_of(message))
        return await _settle(model, level, messages, spec, message, usage)
    error = "the server refused every structured-output method (" + "; ".join(refusals) + ")"
    return StructuredReply(value=None, text="", usage=usage, level=None, error=error)


async def _settle(
    model: ChatOpenAI,
    level: Level,
    messages: Sequence[BaseMessage],
    spec: OutputSpec,
    first: AIMessage,
    usage: Usage,
) -> StructuredReply:
    try:
        value = parse_structured(first.text, spec.schema)
        return StructuredReply(value=value, text=first.text, usage=usage, level=level)
    except ValueError as problem:
        blank = not first.text.strip()
        second_chance = messages if blank else _repair_prompt(first.text, problem, spec)
    try:
        second = await _ask(model, level, second_chance, spec)
    except (ContextOverflowError, *_REFUSALS) as error:
        return StructuredReply(
            value=None, text=first.text, usage=usage, level=level, error=f"repair failed: {error}"
        )
    usage = add_usage(usage, usage_of(second))
    try:
        value = parse_structured(second.text, spec.schema)
    except ValueError as problem:
        error = f"no usable JSON even after a second attempt: {problem}"
        text = second.text or first.text
        return StructuredReply(value=None, text=text, usage=usage, level=level, error=error)
    return StructuredReply(value=value, text=second.text, usage=usage, level=level)


def _repair_prompt(text: str, problem: ValueError, spec: OutputSpec) -> list[BaseMessage]:
    schema = json.dumps(spec.schema, indent=2)
    return [HumanMessage(render_prompt("repair_json", schema=schema, problem=problem, reply=text))]


# A grammar without bounds lets a small model write one string until max_tokens runs out.
MAX_GRAMMAR_STRING = 160
MAX_GRAMMAR_ITEMS = 4


def bounded_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with every string and array given a maximum size."""
    bounded: dict[str, Any] = {
        key: bounded_schema(value) if isinstance(value, Mapping) else value
        for key, value in schema.items()
    }
    if bounded.get("type") == "string":
        bounded.setdefault("maxLength", MAX_GRAMMAR_STRING)
    if bounded.get("type") == "array":
        bounded.setdefault("maxItems", MAX_GRAMMAR_ITEMS)
    return bounded


async def _ask(
    model: ChatOpenAI, level: Level, messages: Sequence[BaseMessage], spec: OutputSpec
) -> AIMessage:
    """One call at ``level``, returning the raw reply (so its usage is always counted)."""
    if level is Level.JSON_SCHEMA:
        json_schema = {"name": spec.name, "schema": dict(spec.schema), "strict": True}
        return await _ainvoke(model, messages, {"type": "json_schema", "json_schema": json_schema})
    if level is Level.JSON_OBJECT_SCHEMA:
        schema = bounded_schema(spec.schema)
        return await _ainvoke(model, messages, {"type": "json_object", "schema": schema})
    if level is Level.JSON_MODE:
        return await _ainvoke(model, messages, {"type": "json_object"})
    return await model.ainvoke(list(messages))


async def _ainvoke(
    model: ChatOpenAI, messages: Sequence[BaseMessage], response_format: dict[str, Any]
) -> AIMessage:
    """The request ``with_structured_output(schema, method="json_schema", include_raw=True)``
    (or ``method="json_mode"``) would send, sent as a plain completion.

    A ``response_format`` argument routes ChatOpenAI through the SDK's ``parse`` path and the
    structured-output wrapper adds runnable and parser layers; together they double a call's
    client CPU, which shows as wall time when many chunks are distilled at once. Their parser
    also silently completes truncated JSON, hiding lost items; ``parse_structured`` parses
    instead. The format goes in ``extra_body`` (merged with the model's own) so the body on
    the wire is the same.
    """
    extra_body = {**(model.extra_body or {}), "response_format": response_format}
    return await model.ainvoke(list(messages), extra_body=extra_body)
