"""The conversation graph against the fake server: rounds, routing, noise, end guard."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from graph_distill.context import ConversationContext
from graph_distill.conversation.graph import (
    conversation_builder,
    conversation_graph,
    recursion_limit,
)
from graph_distill.conversation.nodes import end_guard
from graph_distill.conversation.roles import role_break
from graph_distill.conversation.scenarios import builtin_scenarios
from tests.support.fake_openai import FakeOpenAIServer, _Fault, message_text
from tests.support.roles import RoleResponder, Script, varied

SCENARIO = builtin_scenarios()[0]


def context(server: FakeOpenAIServer, **overrides: Any) -> ConversationContext:
    values: dict[str, Any] = {
        "base_url": server.base_url,
        "api_key": "k",
        "model": "m",
        "min_rounds": 3,
        "max_rounds": 3,
        "typo_rate": 0.0,
        # Messages as written: no style channel, a persona that says everything at once.
        "style_rate": 0.0,
        "persona": "casual-intermediate",
    }
    return ConversationContext(**{**values, **overrides})


async def converse(
    responder: RoleResponder | None = None,
    *,
    rounds: int = 4,
    scenario: dict[str, Any] | None = None,
    seed: int = 1,
    **overrides: Any,
) -> tuple[dict[str, Any], RoleResponder, FakeOpenAIServer]:
    responder = responder or RoleResponder()
    with FakeOpenAIServer(responder) as server:
        ctx = context(server, min_rounds=rounds, max_rounds=rounds, **overrides)
        inputs = {
            "scenario": scenario or SCENARIO.to_record(),
            "seed": seed,
            "target_rounds": rounds,
        }
        output = await conversation_graph.ainvoke(inputs, {"recursion_limit": 500}, context=ctx)
    return output["conversation_record"], responder, server


def assert_well_formed(record: dict[str, Any], rounds: int) -> None:
    conversation = record["conversation"]
    assert [m["role"] for m in conversation] == ["user", "assistant"] * rounds
    assert all(m["content"].strip() for m in conversation)
    assert record["total_rounds"] == rounds


async def test_runs_to_target_rounds_and_ends_on_assistant() -> None:
    record, responder, server = await converse(rounds=5)
    assert_well_formed(record, 5)
    assert record["metadata"]["termination_reason"] == "target_rounds"
    assert record["conversation"][0]["content"] == SCENARIO.user_prompt
    # first user message is the scenario's prompt: 4 simulator calls + 5 assistant calls
    assert len(responder.bodies["user"]) == 4
    assert len(responder.bodies["assistant"]) == 5
    usage = record["metadata"]["usage"]
    assert usage["calls"] == 9 == server.calls
    assert usage["input_tokens"] > 0 and usage["output_tokens"] > 0


async def test_target_rounds_drawn_from_range_with_seed() -> None:
    with FakeOpenAIServer(RoleResponder()) as server:
        ctx = context(server, min_rounds=2, max_rounds=6)
        targets = set()
        for seed in range(8):
            out = await conversation_graph.ainvoke({"seed": seed}, context=ctx)
            record = out["conversation_record"]
            assert 2 <= record["metadata"]["target_rounds"] <= 6
            assert record["total_rounds"] == record["metadata"]["target_rounds"]
            targets.add(record["metadata"]["target_rounds"])
            again = await conversation_graph.ainvoke({"seed": seed}, context=ctx)
            assert (
                again["conversation_record"]["metadata"]["target_rounds"]
                == (record["metadata"]["target_rounds"])
            )
            assert again["conversation_record"]["scenario"] == record["scenario"]
    assert len(targets) > 1


async def test_acknowledgements_switch_to_next_followup() -> None:
    acks = RoleResponder(user=lambda n: "ok thanks" if n < 2 else f"real question {n} here?")
    record, responder, _ = await converse(acks, rounds=5)
    assert_well_formed(record, 5)
    switch = record["metadata"]["topic_switches"][0]
    assert switch["to_topic"] == SCENARIO.user_followups[0]
    assert "acknowledgements" in switch["reason"]
    assert switch["turn"] == 6  # after round 3 (messages 0..5), the next message is about it
    steered = message_text(responder.bodies["user"][2]["messages"][-1])
    assert SCENARIO.user_followups[0] in steered


async def test_user_repeat_switches_topic_and_next_message_is_steered() -> None:
    same = RoleResponder(user=lambda n: "how do I pick a learning rate for my model?")
    record, _, _ = await converse(same, rounds=12, stall_retry_rounds=1)
    reasons = [s["reason"] for s in record["metadata"]["topic_switches"]]
    assert reasons and all("repeated an earlier message" in r for r in reasons)
    topics = [s["to_topic"] for s in record["metadata"]["topic_switches"]]
    assert topics == list(SCENARIO.user_followups[: len(topics)])


async def test_assistant_repeat_is_a_stall() -> None:
    parrot = RoleResponder(assistant=lambda n: "Gradient descent updates weights step by step.")
    record, _, _ = await converse(parrot, rounds=4)
    assert any("assistant repeated" in s["reason"] for s in record["metadata"]["topic_switches"])


async def test_followups_exhausted_asks_model_for_fresh_subtopic() -> None:
    scenario = {**SCENARIO.to_record(), "user_followups": ["only one followup"]}
    bye = RoleResponder(user=lambda n: "ok bye, see you later")
    record, responder, _ = await converse(bye, rounds=4, scenario=scenario)
    switches = record["metadata"]["topic_switches"]
    assert switches[0]["to_topic"] == "only one followup"
    assert switches[1]["to_topic"].startswith("fresh subtopic number")
    assert "goodbye" in switches[0]["reason"]
    subtopic_prompt = message_text(responder.bodies["subtopic"][0]["messages"][0])
    assert "only one followup" in subtopic_prompt


async def test_role_breaking_user_message_is_regenerated_at_most_twice() -> None:
    script = RoleResponder(
        user=lambda n: (
            "As an AI language model, I can explain that."
            if n % 4
            else f"question {n} about gradients?"
        )
    )
    record, responder, _ = await converse(script, rounds=3)
    users = [m["content"] for m in record["conversation"] if m["role"] == "user"]
    assert not any("As an AI" in u for u in users)
    # round 2: call 0 fine; round 3: calls 1, 2, 3 all break role -> fallback followup
    assert len(responder.bodies["user"]) == 4
    assert users[2] == SCENARIO.user_followups[0]


def test_role_break_rules() -> None:
    assert role_break("", None) == "empty"
    assert role_break("As an AI, I think so", None) == "speaks as the AI"
    assert role_break("sure.\nAssistant: here is the answer", None) == "speaks as the AI"
    assert role_break("x" * 2000, None) == "explains like an expert"
    reply = "Overfitting means the model memorises noise in the training data."
    assert role_break(reply, reply) == "echoes the assistant"
    assert role_break("hmm so how do i spot overfitting early?", reply) is None


async def test_empty_assistant_reply_is_regenerated() -> None:
    flaky = RoleResponder(assistant=lambda n: "" if n == 1 else f"answer number {n} here ok")
    record, responder, _ = await converse(flaky, rounds=3)
    assert_well_formed(record, 3)
    assert len(responder.bodies["assistant"]) == 4


async def test_noise_is_seeded_recorded_and_reaches_the_assistant() -> None:
    first, _, _ = await converse(rounds=6, typo_rate=1.0, seed=7)
    again, responder, _ = await converse(rounds=6, typo_rate=1.0, seed=7)
    noise = first["metadata"]["noise"]
    assert noise == again["metadata"]["noise"]
    assert [n["turn"] for n in noise] == [0, 2, 4, 6, 8, 10]
    for entry in noise:
        assert entry["edits"]
        assert first["conversation"][entry["turn"]]["content"] != entry["clean"]
    sent = message_text(responder.bodies["assistant"][0]["messages"][-1])
    assert sent == first["conversation"][0]["content"] != SCENARIO.user_prompt


async def test_no_noise_at_rate_zero() -> None:
    record, _, _ = await converse(rounds=4, typo_rate=0.0)
    assert record["metadata"]["noise"] == []


async def test_history_window_bounds_prompt_and_keeps_prefix_stable() -> None:
    record, responder, server = await converse(
        rounds=30, history_budget_tokens=600, history_cut_step=8
    )
    assert_well_formed(record, 30)
    sizes = [len(b["messages"]) for b in responder.bodies["assistant"]]
    assert max(sizes) < 30
    assert server.stats["cached_tokens"] > 0.5 * server.stats["prompt_tokens"]


async def test_end_guard_drops_trailing_user_and_empty_messages() -> None:
    state = {
        "conversation_id": "c1",
        "scenario": SCENARIO.to_record(),
        "scenario_key": SCENARIO.key,
        "seed": 1,
        "target_rounds": 2,
        "rounds": 2,
        "conversation_messages": [
            HumanMessage("hi", id="m0"),
            AIMessage("hello", id="m1"),
            HumanMessage("more?", id="m2"),
            AIMessage(" ", id="m3"),
            HumanMessage("dangling", id="m4"),
        ],
    }

    class Runtime:
        context = ConversationContext(base_url="http://127.0.0.1:9/v1", model="m")
        stream_writer = staticmethod(lambda _event: None)

    out = await end_guard(state, Runtime())  # type: ignore[arg-type]
    assert out["conversation"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert {m.id for m in out["conversation_messages"]} == {"m2", "m3", "m4"}
    assert out["conversation_record"]["total_rounds"] == 1
    assert out["conversation_record"]["metadata"]["termination_reason"] == "target_rounds"


async def test_checkpointed_run_and_streamed_rounds() -> None:
    graph = conversation_builder.compile(checkpointer=InMemorySaver(), name="conversation")
    with FakeOpenAIServer(RoleResponder()) as server:
        config = {"configurable": {"thread_id": "t1"}, "recursion_limit": 200}
        rounds = [
            update["respond"]["rounds"]
            async for update in graph.astream(
                {"seed": 2, "target_rounds": 3},
                config,
                context=context(server),
                stream_mode="updates",
            )
            if "respond" in update
        ]
        state = await graph.aget_state(config)
    assert rounds == [1, 2, 3]
    assert state.values["rounds"] == 3 and not state.next


def test_graph_is_named_and_drawable_offline() -> None:
    assert conversation_graph.name == "conversation"
    mermaid = conversation_graph.get_graph().draw_mermaid()
    for node in (
        "simulate_user",
        "respond",
        "switch_topic",
        "end_guard",
    ):
        assert node in mermaid
    # the stagnation detector is the conditional edge out of the assistant step
    assert {"respond -.-> simulate_user", "respond -.-> switch_topic"} <= {
        line.strip().rstrip(";") for line in mermaid.splitlines()
    }
    assert "respond -.-> end_guard" in mermaid


def test_bad_round_range_is_rejected() -> None:
    with FakeOpenAIServer() as server, pytest.raises(ValueError, match="min_rounds"):
        conversation_graph.invoke({"seed": 1}, context=context(server, min_rounds=5, max_rounds=2))


CUT_ANSWER = "Gradient descent moves the weights downhill. Each step follows the slope of the loss."
CUT_QUESTION = "I tried that and it helped a lot."


def uncut(prefix: str) -> Script:
    """Replies under the token limit that a trim would shorten (a sentence, then no stop)."""
    return lambda n: f"Here is short {prefix} number {n}. " + varied(prefix)(n)


@pytest.mark.parametrize("streamed", [False, True])
async def test_replies_cut_at_the_token_limit_are_trimmed_to_a_sentence(streamed: bool) -> None:
    tail = " Then it keeps going" + " and going" * 60
    script = RoleResponder(
        assistant=lambda n: CUT_ANSWER + tail if n == 1 else uncut("answer")(n),
        user=lambda n: CUT_QUESTION + tail if n == 0 else uncut("question")(n),
    )
    with FakeOpenAIServer(script, honor_max_tokens=True) as server:
        ctx = context(server, max_output_tokens=60)
        inputs = {"scenario": SCENARIO.to_record(), "seed": 1, "target_rounds": 3}
        config = {"recursion_limit": 100}
        if streamed:
            chunks, record = 0, {}
            async for mode, data in conversation_graph.astream(
                inputs, config, context=ctx, stream_mode=["messages", "values"]
            ):
                if mode == "messages":
                    chunks += data[1].get("langgraph_node") == "respond"
                else:
                    record = data.get("conversation_record", record)
            assert chunks > 10  # the assistant's replies really came as streams
        else:
            output = await conversation_graph.ainvoke(inputs, config, context=ctx)
            record = output["conversation_record"]
    assert_well_formed(record, 3)
    contents = [m["content"] for m in record["conversation"]]
    assert contents[2] == CUT_QUESTION
    assert contents[3] == CUT_ANSWER
    assert contents[1] == uncut("answer")(0)
    assert contents[5] == uncut("answer")(2)
    assert contents[4] == uncut("question")(1)


LOOP_USER = "You're so right, I'll just make sure to share more examples of this theme of {}."
LOOP_REPLY = "You're so right, I'm glad you brought it back to the story of {} and kindness."
LOOP_TAILS = ["friendship", "generosity", "sharing", "warmth", "caring", "giving", "trust"]


def praise_loop(template: str) -> Script:
    return lambda n: template.format(LOOP_TAILS[n % len(LOOP_TAILS)])


class PenaltyRefusingServer(FakeOpenAIServer):
    """A server that answers 400 to requests with repetition penalties (some do)."""

    def _refusal(self, body: Any) -> Any:
        if "frequency_penalty" in body or "presence_penalty" in body:
            return _Fault("400", message="frequency_penalty is not supported")
        return super()._refusal(body)


async def stream_loop(server: FakeOpenAIServer, rounds: int) -> tuple[dict[str, Any], list[Any]]:
    ctx = context(server, min_rounds=rounds, max_rounds=rounds)
    inputs = {"scenario": SCENARIO.to_record(), "seed": 1, "target_rounds": rounds}
    events, record = [], {}
    async for mode, data in conversation_graph.astream(
        inputs, {"recursion_limit": 200}, context=ctx, stream_mode=["custom", "values"]
    ):
        if mode == "custom":
            events.append(data)
        else:
            record = data.get("conversation_record", record)
    return record, events


@pytest.mark.parametrize("server_class", [FakeOpenAIServer, PenaltyRefusingServer])
async def test_a_stall_that_switching_does_not_break_escalates_then_ends_stalled(
    server_class: type[FakeOpenAIServer],
) -> None:
    loop = RoleResponder(user=praise_loop(LOOP_USER), assistant=praise_loop(LOOP_REPLY))
    with server_class(loop) as server:
        record, events = await stream_loop(server, rounds=30)
    meta = record["metadata"]
    assert meta["termination_reason"] == "stalled"
    assert_well_formed(record, record["total_rounds"])
    assert record["total_rounds"] < 30
    switches = meta["topic_switches"]
    assert [s["escalation"] for s in switches] == [1, 2]
    assert "did not take" in switches[1]["reason"]
    # each step came within stall_retry_rounds of the one before
    ends = [s["turn"] // 2 for s in switches] + [record["total_rounds"]]
    assert all(0 < b - a <= ConversationContext().stall_retry_rounds for a, b in pairs(ends))
    kinds = [e["kind"] for e in events]
    assert kinds.count("topic_switch") == 2 and kinds[-1] == "stalled"
    assert events[-1]["reason"] == meta["stall"]["reason"]
    # after the firm switch every model call asks for repetition penalties, with a firmer steer
    firm_from = switches[1]["turn"] // 2
    late = [r for r in server.records if len(r.body["messages"]) > 2 * firm_from]
    with_penalty = [r for r in late if r.body.get("frequency_penalty") == 0.8]
    assert with_penalty and all(r.body.get("presence_penalty") == 0.8 for r in with_penalty)
    if server_class is PenaltyRefusingServer:
        # refused, then asked again without them
        assert all(r.fault == "400" for r in with_penalty)
        assert len(late) == 2 * len(with_penalty)
    else:
        assert late == with_penalty
    steer = message_text(loop.bodies["user"][firm_from - 1]["messages"][-1])
    assert "going in circles" in steer


def pairs(values: list[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(values))


async def test_a_switch_that_takes_resets_the_escalation() -> None:
    def user(n: int) -> str:
        return praise_loop(LOOP_USER)(n) if n in (1, 2, 3) else varied("question")(n)

    def reply(n: int) -> str:
        return praise_loop(LOOP_REPLY)(n) if n in (2, 3, 4) else varied("answer")(n)

    script = RoleResponder(user=user, assistant=reply)
    record, _, _ = await converse(script, rounds=12)
    assert record["metadata"]["termination_reason"] == "target_rounds"
    assert [s["escalation"] for s in record["metadata"]["topic_switches"]] == [1]


async def test_role_breaks_are_recorded() -> None:
    script = RoleResponder(
        user=lambda n: (
            "What is overfitting? Overfitting is when a model memorises the training data."
            if n == 0
            else f"question {n} about gradients?"
        )
    )
    record, _, _ = await converse(script, rounds=3)
    assert record["metadata"]["role_breaks"] == [{"turn": 2, "reason": "answers its own question"}]


async def test_recursion_limit_fits_a_switch_after_every_round() -> None:
    rounds = 12
    bye = RoleResponder(user=lambda n: f"ok bye {n}, see you later")
    with FakeOpenAIServer(bye) as server:
        ctx = context(server, min_rounds=rounds, max_rounds=rounds, stall_retry_rounds=0)
        inputs = {"scenario": SCENARIO.to_record(), "seed": 1, "target_rounds": rounds}
        config = {"recursion_limit": recursion_limit(rounds)}
        output = await conversation_graph.ainvoke(inputs, config, context=ctx)
    record = output["conversation_record"]
    assert record["total_rounds"] == rounds
    # the first message is the scenario's; every later round ends in a switch
    assert len(record["metadata"]["topic_switches"]) == rounds - 2
