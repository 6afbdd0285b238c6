"""Nodes of the conversation graph: simulated user, noise, assistant, stall check, end guard."""

from __future__ import annotations

import random
import uuid
from datetime import datetime
from typing import Any, Literal

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
)
from langgraph.runtime import Runtime
from langgraph.types import Command

from graph_distill.context import ConversationContext
from graph_distill.conversation.history import flipped, window
from graph_distill.conversation.noise import noise_user_message
from graph_distill.conversation.roles import clean_user_text, role_break
from graph_distill.conversation.scenarios import Scenario, builtin_scenarios, pick_scenario
from graph_distill.conversation.stagnation import REASONS, detect_stall
from graph_distill.conversation.state import ConversationState, Progress
from graph_distill.llm.models import chat_model, model_name
from graph_distill.llm.prompting import load_prompt, render_prompt
from graph_distill.llm.replies import finished_text
from graph_distill.llm.tokens import encoding
from graph_distill.llm.usage import Usage, add_usage, empty_usage, usage_of


class EmptyReplyError(RuntimeError):
    """The model answered with nothing, even after regenerating."""


def _context(runtime: Runtime[ConversationContext]) -> ConversationContext:
    return runtime.context or ConversationContext()


def _scenario(state: ConversationState) -> Scenario:
    return Scenario.from_record(state["scenario"])


def _texts(state: ConversationState, kind: type[BaseMessage]) -> list[str]:
    return [m.text for m in state.get("conversation_messages", []) if isinstance(m, kind)]


def start(state: ConversationState, runtime: Runtime[ConversationContext]) -> dict[str, Any]:
    """Fill in what the caller left out, reproducibly from the seed."""
    ctx = _context(runtime)
    if not 1 <= ctx.min_rounds <= ctx.max_rounds:
        raise ValueError(
            f"need 1 <= min_rounds <= max_rounds, got {ctx.min_rounds}..{ctx.max_rounds}"
        )
    # Loaded here, in a worker thread: the async nodes count tokens, and an Agent Server
    # refuses the file reads of a first load inside its event loop.
    encoding()
    seed = state.get("seed", random.SystemRandom().randrange(2**31))
    rng = random.Random(seed)
    has_scenario = "scenario" in state
    scenario = _scenario(state) if has_scenario else pick_scenario(builtin_scenarios(), rng)
    target_rounds = state.get("target_rounds") or rng.randint(ctx.min_rounds, ctx.max_rounds)
    runtime.stream_writer(Progress(kind="started", target_rounds=target_rounds))
    return {
        "seed": seed,
        "scenario": scenario.to_record(),
        "scenario_key": state.get("scenario_key") or scenario.key,
        "conversation_id": state.get("conversation_id") or uuid.uuid4().hex,
        "target_rounds": target_rounds,
        "rounds": 0,
        "followups_used": 0,
        "pending_topic": None,
    }


def _next_followup(state: ConversationState) -> str | None:
    followups = _scenario(state).user_followups
    used = state.get("followups_used", 0)
    return followups[used] if used < len(followups) else None


async def simulate_user(
    state: ConversationState, runtime: Runtime[ConversationContext]
) -> dict[str, Any]:
    """The next user message, written by a model that sees the chat from the user's side."""
    messages = state.get("conversation_messages", [])
    turn = len(messages)
    if not messages:
        text, usage = _scenario(state).user_prompt, empty_usage()
    else:
        text, usage = await _write_user_message(state, _context(runtime))
    return {
        "conversation_messages": [HumanMessage(text, id=f"m{turn}")],
        "pending_topic": None,
        "conversation_usage": usage,
    }


async def _write_user_message(
    state: ConversationState, ctx: ConversationContext
) -> tuple[str, Usage]:
    scenario = _scenario(state)
    system = render_prompt(
        "user_simulator", description=scenario.description, user_prompt=scenario.user_prompt
    )
    view = flipped(
        window(state["conversation_messages"], ctx.history_budget_tokens, ctx.history_cut_step)
    )
    if state.get("pending_topic"):
        steer = render_prompt("user_steer", topic=state["pending_topic"])
        view[-1] = HumanMessage(view[-1].text + steer)
    prompt = [SystemMessage(system), HumanMessage(load_prompt("user_kickoff")), *view]
    model = chat_model(
        ctx, "user", temperature=ctx.user_temperature, max_tokens=ctx.max_output_tokens
    )
    last_reply = state["conversation_messages"][-1].text
    usage = empty_usage()
    for _ in range(ctx.max_role_retries + 1):
        reply = await model.ainvoke(prompt)
        usage = add_usage(usage, usage_of(reply))
        text = clean_user_text(finished_text(reply))
        if role_break(text, last_reply) is None:
            return text, usage
    fallback = state.get("pending_topic") or _next_followup(state) or "Can you go into more detail?"
    return fallback, usage


def add_noise(state: ConversationState, runtime: Runtime[ConversationContext]) -> dict[str, Any]:
    """Typos and grammar slips in a seeded share of user messages (the clean text is kept)."""
    ctx = _context(runtime)
    messages = state["conversation_messages"]
    latest = messages[-1]
    user_turn = sum(isinstance(m, HumanMessage) for m in messages) - 1
    result = noise_user_message(
        latest.text, seed=state["seed"], user_turn=user_turn, rate=ctx.typo_rate
    )
    shown = latest.text if result is None else result.text
    runtime.stream_writer(Progress(kind="user_message", turn=len(messages) - 1, text=shown))
    if result is None:
        return {}
    return {
        "conversation_messages": [HumanMessage(result.text, id=latest.id)],
        "noise": [{"turn": len(messages) - 1, "clean": latest.text, "edits": result.edits}],
    }


async def respond(
    state: ConversationState, runtime: Runtime[ConversationContext]
) -> dict[str, Any]:
    """The assistant's reply, in the scenario's role, to a token-bounded window of the chat."""
    ctx = _context(runtime)
    messages = state["conversation_messages"]
    system = _scenario(state).ai_role + load_prompt("assistant_guidance")
    prompt = [
        SystemMessage(system),
        *window(messages, ctx.history_budget_tokens, ctx.history_cut_step),
    ]
    model = chat_model(
        ctx, "assistant", temperature=ctx.assistant_temperature, max_tokens=ctx.max_output_tokens
    )
    usage = empty_usage()
    for _ in range(ctx.max_role_retries + 1):
        reply = await model.ainvoke(prompt)
        usage = add_usage(usage, usage_of(reply))
        text = finished_text(reply).strip()
        if text:
            rounds = state.get("rounds", 0) + 1
            runtime.stream_writer(
                Progress(kind="round_done", rounds=rounds, target_rounds=state["target_rounds"])
            )
            return {
                "conversation_messages": [AIMessage(text, id=f"m{len(messages)}")],
                "rounds": rounds,
                "conversation_usage": usage,
            }
    raise EmptyReplyError("the assistant model kept answering with an empty message")


def check_progress(
    state: ConversationState, runtime: Runtime[ConversationContext]
) -> Command[Literal["simulate_user", "switch_topic", "finish"]]:
    """End guard and stagnation detector between rounds."""
    if state["rounds"] >= state["target_rounds"]:
        return Command(goto="finish", update={"termination_reason": "target_rounds"})
    stall = detect_stall(
        _texts(state, HumanMessage),
        _texts(state, AIMessage),
        _context(runtime).similarity_threshold,
    )
    if stall is None:
        return Command(goto="simulate_user")
    return Command(goto="switch_topic", update={"stall_reason": stall})


async def switch_topic(
    state: ConversationState, runtime: Runtime[ConversationContext]
) -> dict[str, Any]:
    """Steer the next user message to the next unused followup, or to a fresh subtopic."""
    reason = state.get("stall_reason") or "stall"
    followup = _next_followup(state)
    update: dict[str, Any] = {}
    if followup is not None:
        topic, update["followups_used"] = followup, state.get("followups_used", 0) + 1
    else:
        topic, update["conversation_usage"] = await _fresh_subtopic(state, _context(runtime))
    turn = len(state["conversation_messages"])
    update["pending_topic"] = topic
    switch = {"turn": turn, "reason": REASONS.get(reason, reason), "to_topic": topic}
    runtime.stream_writer(Progress(kind="topic_switch", **switch))
    update["topic_switches"] = [switch]
    return update


async def _fresh_subtopic(state: ConversationState, ctx: ConversationContext) -> tuple[str, Usage]:
    scenario = _scenario(state)
    covered = [*scenario.user_followups, *(s["to_topic"] for s in state.get("topic_switches", []))]
    prompt = render_prompt(
        "subtopic",
        description=scenario.description,
        covered="\n".join(f"- {t}" for t in [scenario.user_prompt, *covered]),
    )
    model = chat_model(ctx, "user", temperature=ctx.user_temperature, max_tokens=80)
    reply = await model.ainvoke([HumanMessage(prompt)])
    lines = [clean_user_text(line) for line in reply.text.splitlines() if line.strip()]
    return (lines[0] if lines else "something related we haven't covered yet"), usage_of(reply)


def finish(state: ConversationState, runtime: Runtime[ConversationContext]) -> dict[str, Any]:
    """End on the assistant: drop a trailing user message and empty ones; build the record."""
    ctx = _context(runtime)
    messages = [m for m in state["conversation_messages"] if m.text.strip()]
    while messages and not isinstance(messages[-1], AIMessage):
        messages.pop()
    kept_ids = {m.id for m in messages}
    removed = [
        RemoveMessage(id=m.id) for m in state["conversation_messages"] if m.id not in kept_ids
    ]
    conversation = [
        {"role": "user" if isinstance(m, HumanMessage) else "assistant", "content": m.text}
        for m in messages
    ]
    reason = state.get("termination_reason") or "ended"
    record = {
        "id": state["conversation_id"],
        "scenario": state["scenario"],
        "conversation": conversation,
        "total_rounds": sum(isinstance(m, AIMessage) for m in messages),
        "created_at": datetime.now().isoformat(timespec="seconds"),
        "metadata": {
            "model": model_name(ctx, "assistant"),
            "user_model": model_name(ctx, "user"),
            "scenario_key": state["scenario_key"],
            "seed": state["seed"],
            "target_rounds": state["target_rounds"],
            "termination_reason": reason,
            "topic_switches": state.get("topic_switches", []),
            "noise": state.get("noise", []),
            "usage": add_usage(state.get("conversation_usage"), None),
        },
    }
    return {
        "conversation_messages": removed,
        "termination_reason": reason,
        "conversation": conversation,
        "conversation_record": record,
    }
