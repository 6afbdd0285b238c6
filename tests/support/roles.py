"""A fake-server responder that answers each role of the conversation graph differently."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

from tests.support.fake_openai import DefaultResponder, message_text

Script = Callable[[int], str]


def role_of(body: dict[str, Any]) -> str:
    """Which graph role sent this request: user simulator, subtopic, distill, or assistant."""
    first = message_text(body["messages"][0])
    if first.startswith("You are role-playing a real person"):
        return "user"
    if "Suggest ONE fresh, specific subtopic" in first:
        return "subtopic"
    if body.get("response_format") or body.get("tools") or "notes" in first.lower():
        return "distill"
    return "assistant"


def varied(prefix: str) -> Script:
    words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
    return lambda n: (
        f"{prefix} {n}: "
        + " ".join(f"{prefix[:3]}{words[(n * k) % len(words)]}{n * 7 + k}" for k in range(1, 9))
    )


class RoleResponder:
    """Answers per role from scripts ``n -> text`` (n counts that role's calls from 0);
    roles without a script (distill) get the fake server's default answers."""

    def __init__(self, **scripts: Script) -> None:
        self.scripts = {
            "user": varied("question"),
            "assistant": varied("answer"),
            "subtopic": lambda n: f"fresh subtopic number {n}",
            **scripts,
        }
        self.fallback = DefaultResponder()
        self.counters: dict[str, Iterator[int]] = {}
        self.bodies: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, body: dict[str, Any]) -> str:
        role = role_of(body)
        self.bodies.setdefault(role, []).append(body)
        number = next(self.counters.setdefault(role, itertools.count()))
        script = self.scripts.get(role)
        return script(number) if script else self.fallback(body)
