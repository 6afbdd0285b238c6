"""Recorded transcripts replayed turn by turn through the real conversation graph.

The fake server answers the user simulator with the recorded user message of the round the
request is about, and the assistant with the recorded reply; the round follows from how many
messages the request carries (replays send the whole history: no window cut).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph_distill.context import ConversationContext
from graph_distill.conversation.graph import conversation_graph, recursion_limit
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.roles import RoleResponder, role_of

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
NO_CUT_TOKENS = 10**8
REPLAYED_ROLES = ("user", "assistant")


@dataclass(frozen=True)
class Transcript:
    name: str
    scenario: dict[str, Any]
    users: list[str]
    assistants: list[str]
    loop_start: int | None
    """Round (1-based) where the recorded conversation starts to loop; None when healthy."""

    @property
    def rounds(self) -> int:
        return len(self.assistants)


def load_transcripts(kind: str) -> list[Transcript]:
    """The fixtures of one kind: ``degenerate`` (labelled loops) or ``healthy``."""
    return [_load(path) for path in sorted((TRANSCRIPTS / kind).glob("*.json"))]


def _load(path: Path) -> Transcript:
    data = json.loads(path.read_text("utf-8"))
    messages = data["conversation"]
    return Transcript(
        name=path.stem,
        scenario=data["scenario"],
        users=[m["content"] for m in messages[0::2]],
        assistants=[m["content"] for m in messages[1::2]],
        loop_start=data.get("loop_start"),
    )


class ReplayResponder(RoleResponder):
    """Serves each role its recorded message for the round a request is about."""

    def __init__(self, transcript: Transcript) -> None:
        super().__init__()
        self.transcript = transcript

    def __call__(self, body: dict[str, Any]) -> str:
        role = role_of(body)
        if role not in REPLAYED_ROLES:
            return super().__call__(body)
        self.bodies.setdefault(role, []).append(body)
        # user: system, kickoff, 2k messages; assistant: system, 2k + 1 messages (k rounds done)
        index = (len(body["messages"]) - 2) // 2
        recorded = self.transcript.users if role == "user" else self.transcript.assistants
        return recorded[min(index, len(recorded) - 1)]


@dataclass
class Replay:
    record: dict[str, Any]
    events: list[dict[str, Any]]
    responder: ReplayResponder

    def switch_rounds(self) -> list[int]:
        """Rounds after which a topic switch happened."""
        return [switch["turn"] // 2 for switch in self.record["metadata"]["topic_switches"]]


async def replay(transcript: Transcript, **overrides: Any) -> Replay:
    """Run the conversation graph on ``transcript``'s recorded replies."""
    responder = ReplayResponder(transcript)
    with FakeOpenAIServer(responder) as server:
        settings: dict[str, Any] = {
            "base_url": server.base_url,
            "api_key": "k",
            "model": "m",
            "typo_rate": 0.0,
            # Messages as written: no style channel, a persona that says everything at once.
            "style_rate": 0.0,
            "persona": "casual-intermediate",
            "history_budget_tokens": NO_CUT_TOKENS,
            "min_rounds": transcript.rounds,
            "max_rounds": transcript.rounds,
        }
        ctx = ConversationContext(**{**settings, **overrides})
        inputs = {"scenario": transcript.scenario, "seed": 1, "target_rounds": transcript.rounds}
        config = {"recursion_limit": recursion_limit(transcript.rounds)}
        events: list[dict[str, Any]] = []
        record: dict[str, Any] = {}
        async for mode, data in conversation_graph.astream(
            inputs, config, context=ctx, stream_mode=["custom", "values"]
        ):
            if mode == "custom":
                events.append(data)
            else:
                record = data.get("conversation_record", record)
    return Replay(record, events, responder)
