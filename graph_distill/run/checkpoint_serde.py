"""Checkpoint serialization that packs each message once per run.

Every checkpoint holds the whole state, so each step of a conversation serializes every message
so far, and packing a message (a pydantic dump, then msgpack) is most of that work: at 100
rounds it grows each step's cost with the history. Messages are never changed in place once in
the state (a node that edits one writes a new message with the same id), so the packed form of
each message object is kept and reused. The bytes are exactly those ``JsonPlusSerializer``
writes, and reading is its own.
"""

from __future__ import annotations

from typing import Any

import ormsgpack
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer, _msgpack_default, _option

# Packed messages kept (oldest dropped first): 48 conversations of 100 rounds, many times over.
MAX_PACKED_MESSAGES = 65536


class MessagePackingSerializer(JsonPlusSerializer):
    """``JsonPlusSerializer`` that remembers the packed form of each message object."""

    def __init__(self, max_messages: int = MAX_PACKED_MESSAGES, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_messages = max_messages
        # id(message) -> (message, packed): holding the message keeps its id from being reused.
        self._packed: dict[int, tuple[BaseMessage, ormsgpack.Ext]] = {}

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if obj is None or isinstance(obj, bytes | bytearray):
            return super().dumps_typed(obj)
        try:
            return "msgpack", ormsgpack.packb(obj, default=self._default, option=_option)
        except ormsgpack.MsgpackEncodeError:
            return super().dumps_typed(obj)  # its fallbacks (pickle when enabled) or its error

    def _default(self, obj: Any) -> Any:
        if not isinstance(obj, BaseMessage):
            return _msgpack_default(obj)
        known = self._packed.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1]
        packed = _msgpack_default(obj)
        if len(self._packed) >= self._max_messages:
            del self._packed[next(iter(self._packed))]
        self._packed[id(obj)] = (obj, packed)
        return packed
