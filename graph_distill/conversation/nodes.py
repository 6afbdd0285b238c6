"""Nodes of the conversation graph: simulated user (with typos), assistant, topic switch, end guard;
and the stagnation detector, the conditional edge after each assistant reply.

Nodes are coroutines even when they do no I/O: LangGraph runs a plain function in a worker
thread, a thread hop per step that a long run pays thousands of times. ``start`` is the
exception: its first token count loads the encoding file, which must not block the loop."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, cast

import openai
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
)
from langchain_core.runnables import RunnableConfig
from langchain_openai import ChatOpenAI
from langgraph.runtime import Runtime

from graph_distill.context import ConversationContext
from graph_distill.conversation.history import flipped, window
from graph_distill.conversation.noise import NoiseResult, noise_user_message
from graph_distill.conversation.personas import (
    TurnAsk,
    first_message,
    persona_pool,
    persona_prompt,
    pick_persona,
    turn_ask,
)
from graph_distill.conversation.roles import clean_user_text, role_break
from graph_distill.conversation.scenarios import Scenario, builtin_scenarios, pick_scenario
from graph_distill.conversation.stagnation import (
    REASONS,
    keep_recent,
    observe,
    stall_reason,
    stems,
)
from graph_distill.conversation.state import ConversationState, Progress
from graph_distill.conversation.style import style_user_message
from graph_distill.files.writing import ChatMessage, ConversationRecord
from graph_distill.llm.models import chat_model, model_name
from graph_distill.llm.prompting import load_prompt, render_prompt
from graph_distill.llm.replies import finished_text
from graph_distill.llm.resources import RunResources, node_resources
from graph_distill.llm.tokens import encoding
from graph_distill.llm.usage import Usage, add_usage, empty_usage, usage_of

Route = Literal["simulate_user", "switch_topic", "end_guard"]
# Escalation steps of one stall: a topic switch, then a switch with repetition penalties and a
# firmer steer; a stall after that ends the conversation.
FIRM_SWITCH = 2


class EmptyReplyError(RuntimeError):
    """The model answered with nothing, even after regenerating."""


def _context(runtime: Runtime[ConversationContext]) -> ConversationContext:
    return runtime.context or ConversationContext()


def _scenario(state: ConversationState) -> Scenario:
    return Scenario.from_record(state["scenario"])


def _topic_words(*texts: str) -> list[str]:
    return sorted(set().union(*(stems(text) for text in texts)))


def _level(state: ConversationState, ctx: ConversationContext) -> int:
    """How far the current stall has escalated: 0 when there is none or the last switch took."""
    if state.get("rounds", 0) - state.get("escalated_at", 0) > ctx.stall_retry_rounds:
        return 0
    return state.get("escalation", 0)


def _penalty(state: ConversationState, ctx: ConversationContext) -> float:
    return ctx.repetition_penalty if _level(state, ctx) >= FIRM_SWITCH else 0.0


async def _ask(model: ChatOpenAI, prompt: LanguageModelInput, penalty: float) -> BaseMessage:
    """One model call, with repetition penalties when asked for and the server takes them."""
    if penalty:
        with contextlib.suppress(openai.BadRequestError):
            bound = model.bind(frequency_penalty=penalty, presence_penalty=penalty)
            return await bound.ainvoke(prompt)
    return await model.ainvoke(prompt)


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
    persona = state.get("persona") or pick_persona(
        persona_pool(ctx.persona, ctx.personas_file), seed
    )
    runtime.stream_writer(Progress(kind="started", target_rounds=target_rounds))
    return {
        "seed": seed,
        "persona": persona,
        "scenario": scenario.to_record(),
        "topic_words": _topic_words(
            scenario.name, scenario.description, scenario.user_prompt, *scenario.user_followups
        ),
        "escalation": 0,
        "escalated_at": 0,
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
    state: ConversationState, runtime: Runtime[ConversationContext], config: RunnableConfig
) -> dict[str, Any]:
    """The next user message, written by a model that sees the chat from the user's side, with
    typos and grammar slips in a seeded share of them (the clean text is kept in ``noise``)."""
    ctx = _context(runtime)
    messages = state.get("conversation_messages", [])
    turn = len(messages)
    breaks: list[dict[str, Any]] = []
    if not messages:
        text, usage = (
            first_message(state.get("persona"), _scenario(state).user_prompt),
            empty_usage(),
        )
    else:
        async with node_resources(config, ctx) as resources:
            text, usage, breaks = await _write_user_message(state, ctx, resources)
    user_turn = sum(isinstance(m, HumanMessage) for m in messages)
    noised = _user_noise(text, state, ctx, user_turn)
    shown = text if noised is None else noised.text
    runtime.stream_writer(Progress(kind="user_message", turn=turn, text=shown))
    update: dict[str, Any] = {
        "conversation_messages": [HumanMessage(shown, id=f"m{turn}")],
        "pending_topic": None,
        "conversation_usage": usage,
        "role_breaks": breaks,
    }
    if noised is not None:
        update["noise"] = [{"turn": turn, "clean": text, "edits": noised.edits}]
    return update


def _user_noise(
    text: str, state: ConversationState, ctx: ConversationContext, user_turn: int
) -> NoiseResult | None:
    """Typos (their share is --typo-rate's alone), then the persona's typing style on top; one
    result listing both kinds of edits, None when the message is sent as written."""
    seed = state["seed"]
    typos = noise_user_message(text, seed=seed, user_turn=user_turn, rate=ctx.typo_rate)
    typed = text if typos is None else typos.text
    scale = float((state.get("persona") or {}).get("style_scale", 1.0))
    styled = style_user_message(
        typed, seed=seed, user_turn=user_turn, rate=ctx.style_rate, persona_scale=scale
    )
    if styled is None:
        return typos
    return NoiseResult(styled.text, [*(typos.edits if typos else []), *styled.edits])


async def _write_user_message(
    state: ConversationState, ctx: ConversationContext, resources: RunResources
) -> tuple[str, Usage, list[dict[str, Any]]]:
    """The message, its usage, and the role breaks that made it be written again."""
    scenario = _scenario(state)
    persona = state.get("persona")
    system = render_prompt(
        "user_simulator",
        description=scenario.description,
        user_prompt=scenario.user_prompt,
        persona=persona_prompt(persona) if persona else "an ordinary user.",
    )
    view = flipped(
        window(
            state["conversation_messages"],
            ctx.history_budget_tokens,
            ctx.history_cut_step,
            resources,
        ),
        resources,
    )
    if state.get("pending_topic"):
        firm = _level(state, ctx) >= FIRM_SWITCH
        steer_prompt = "user_steer_firm" if firm else "user_steer"
        steer = render_prompt(steer_prompt, topic=state["pending_topic"])
        view[-1] = HumanMessage(view[-1].text + steer)
    user_turn = sum(isinstance(m, HumanMessage) for m in state["conversation_messages"])
    ask = turn_ask(persona, state["seed"], user_turn)
    if ask is not None:
        view[-1] = HumanMessage(view[-1].text + _turn_note(ask))
    prompt = [SystemMessage(system), HumanMessage(load_prompt("user_kickoff")), *view]
    model = chat_model(
        ctx,
        "user",
        temperature=ctx.user_temperature,
        max_tokens=ctx.max_output_tokens,
        resources=resources,
    )
    last_reply = state["conversation_messages"][-1].text
    turn = len(state["conversation_messages"])
    usage, breaks = empty_usage(), []
    for _ in range(ctx.max_role_retries + 1):
        reply = await _ask(model, prompt, _penalty(state, ctx))
        usage = add_usage(usage, usage_of(reply))
        text = clean_user_text(finished_text(reply))
        why = role_break(text, last_reply, _last_reply_shingles(state))
        if why is None:
            return text, usage, breaks
        breaks.append({"turn": turn, "reason": why})
    fallback = state.get("pending_topic") or _next_followup(state) or "Can you go into more detail?"
    return fallback, usage, breaks


def _turn_note(ask: TurnAsk) -> str:
    paste = load_prompt("user_turn_paste") if ask.paste else ""
    pushback = load_prompt("user_turn_pushback") if ask.pushback else ""
    return render_prompt("user_turn", words=ask.words, paste=paste, pushback=pushback).rstrip()


def _last_reply_shingles(state: ConversationState) -> list[int] | None:
    """The last reply's hashed word triples, from its round's print."""
    prints = state.get("round_prints") or []
    if not prints or prints[-1]["round"] != state.get("rounds"):
        return None
    return prints[-1]["assistant"]["shingles"]


async def respond(
    state: ConversationState, runtime: Runtime[ConversationContext], config: RunnableConfig
) -> dict[str, Any]:
    """The assistant's reply, in the scenario's role, to a token-bounded window of the chat."""
    ctx = _context(runtime)
    messages = state["conversation_messages"]
    system = _scenario(state).ai_role + load_prompt("assistant_guidance")
    penalty = _penalty(state, ctx)
    if penalty:
        system += load_prompt("assistant_unstick")
    usage = empty_usage()
    async with node_resources(config, ctx) as resources:
        prompt = [
            SystemMessage(system),
            *window(messages, ctx.history_budget_tokens, ctx.history_cut_step, resources),
        ]
        model = chat_model(
            ctx,
            "assistant",
            temperature=ctx.assistant_temperature,
            max_tokens=ctx.max_output_tokens,
            resources=resources,
        )
        for _ in range(ctx.max_role_retries + 1):
            reply = await _ask(model, prompt, penalty)
            usage = add_usage(usage, usage_of(reply))
            text = finished_text(reply).strip()
            if text:
                return _round_done(state, runtime, text, usage)
    raise EmptyReplyError("the assistant model kept answering with an empty message")


def _round_done(
    state: ConversationState,
    runtime: Runtime[ConversationContext],
    text: str,
    usage: Usage,
) -> dict[str, Any]:
    """The state update of a round the assistant's ``text`` ends, with its routing verdict."""
    ctx = _context(runtime)
    messages = state["conversation_messages"]
    rounds = state.get("rounds", 0) + 1
    runtime.stream_writer(
        Progress(kind="round_done", rounds=rounds, target_rounds=state["target_rounds"])
    )
    prints = state.get("round_prints", [])
    seen = observe(rounds, messages[-1].text, text, prints, ctx)
    after = {**state, "rounds": rounds, "round_prints": keep_recent(prints, [seen])}
    next_step, stall = _verdict(after, ctx)
    return {
        "conversation_messages": [AIMessage(text, id=f"m{len(messages)}")],
        "rounds": rounds,
        "round_prints": [seen],
        "conversation_usage": usage,
        "next_step": next_step,
        "stall_reason": stall,
    }


def _verdict(state: Mapping[str, Any], ctx: ConversationContext) -> tuple[Route, str | None]:
    """Where the conversation goes after a round, and the stall reason key if there is one."""
    rounds = state["rounds"]
    if rounds >= state["target_rounds"]:
        return "end_guard", None
    since_switch = rounds - state.get("escalated_at", 0)
    reason = stall_reason(
        state.get("round_prints", []), state.get("topic_words", []), since_switch, ctx
    )
    if reason is None:
        return "simulate_user", None
    return ("end_guard" if _level(state, ctx) >= FIRM_SWITCH else "switch_topic"), reason


def detect_stagnation(state: ConversationState) -> Route:
    """The edge after each reply: on to the next user message, a topic switch when the talk
    stalls, or the end guard (target reached, or a stall that switching did not break), as
    ``respond`` decided."""
    return cast(Route, state["next_step"])


async def switch_topic(
    state: ConversationState, runtime: Runtime[ConversationContext], config: RunnableConfig
) -> dict[str, Any]:
    """Steer the next user message to the next unused followup, or to a fresh subtopic."""
    ctx = _context(runtime)
    reason = state.get("stall_reason") or "stall"
    level = _level(state, ctx) + 1
    followup = _next_followup(state)
    update: dict[str, Any] = {}
    if followup is not None:
        topic, update["followups_used"] = followup, state.get("followups_used", 0) + 1
    else:
        topic, update["conversation_usage"] = await _fresh_subtopic(state, ctx, config)
    turn = len(state["conversation_messages"])
    why = REASONS.get(reason, reason)
    if level >= FIRM_SWITCH:
        why += " (the last switch did not take)"
    switch = {"turn": turn, "reason": why, "to_topic": topic, "escalation": level}
    runtime.stream_writer(Progress(kind="topic_switch", **switch))
    return {
        **update,
        "pending_topic": topic,
        "topic_switches": [switch],
        "topic_words": sorted({*state.get("topic_words", []), *stems(topic)}),
        "escalation": level,
        "escalated_at": state["rounds"],
    }


async def _fresh_subtopic(
    state: ConversationState, ctx: ConversationContext, config: RunnableConfig
) -> tuple[str, Usage]:
    scenario = _scenario(state)
    covered = [*scenario.user_followups, *(s["to_topic"] for s in state.get("topic_switches", []))]
    prompt = render_prompt(
        "subtopic",
        description=scenario.description,
        covered="\n".join(f"- {t}" for t in [scenario.user_prompt, *covered]),
    )
    async with node_resources(config, ctx) as resources:
        model = chat_model(
            ctx, "user", temperature=ctx.user_temperature, max_tokens=80, resources=resources
        )
        reply = await model.ainvoke([HumanMessage(prompt)])
    lines = [clean_user_text(line) for line in reply.text.splitlines() if line.strip()]
    return (lines[0] if lines else "something related we haven't covered yet"), usage_of(reply)


async def end_guard(
    state: ConversationState, runtime: Runtime[ConversationContext]
) -> dict[str, Any]:
    """End on the assistant: drop a trailing user message and empty ones; build the record.

    Reached at the target round count, or earlier when escalation did not break a stall."""
    ctx = _context(runtime)
    stall = _stall_ending(state)
    if stall:
        stalled = Progress(kind="stalled", rounds=state["rounds"], reason=stall["reason"])
        runtime.stream_writer(stalled)
    messages = [m for m in state["conversation_messages"] if m.text.strip()]
    while messages and not isinstance(messages[-1], AIMessage):
        messages.pop()
    kept_ids = {m.id for m in messages}
    removed = [
        RemoveMessage(id=m.id) for m in state["conversation_messages"] if m.id not in kept_ids
    ]
    conversation: list[ChatMessage] = [
        {"role": "user" if isinstance(m, HumanMessage) else "assistant", "content": m.text}
        for m in messages
    ]
    reason = "stalled" if stall else "target_rounds"
    record: ConversationRecord = {
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
            "role_breaks": state.get("role_breaks", []),
            "noise": state.get("noise", []),
            **({"persona": _persona_entry(state["persona"])} if state.get("persona") else {}),
            "usage": add_usage(state.get("conversation_usage"), None),
            **({"stall": stall} if stall else {}),
        },
    }
    return {
        "conversation_messages": removed,
        "termination_reason": reason,
        "conversation": conversation,
        "conversation_record": record,
    }


def _persona_entry(persona: Mapping[str, Any]) -> dict[str, Any]:
    """``metadata.persona``: name, traits and style scale (the description is the table's)."""
    return {key: value for key, value in persona.items() if key != "description"}


def _stall_ending(state: ConversationState) -> dict[str, Any] | None:
    """``{turn, reason}`` when the conversation ends early on a stall, else None."""
    if state.get("rounds", 0) >= state["target_rounds"]:
        return None
    reason = state.get("stall_reason") or "stall"
    return {"turn": len(state["conversation_messages"]), "reason": REASONS.get(reason, reason)}
