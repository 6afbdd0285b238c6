"""A deployed graph as a node of another graph (``RemoteGraph``), as the README shows: added
directly as a node (the server's context defaults apply), and called from a node of yours with
a context of its own. The deployment is ``langgraph dev`` with the fake model server behind it.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.pregel.remote import RemoteGraph
from typing_extensions import TypedDict

from graph_distill.conversation.graph import recursion_limit
from tests.support.agent_server import SERVER_MODEL, DevServer

ROUNDS = 2


class AgentState(TypedDict, total=False):
    target_rounds: int  # read by the pipeline (its input keys)
    conversation_record: dict[str, Any]  # written by the pipeline (its output keys)
    final_summary: str
    report: str  # the agent's own keys are left alone


def direct_agent(url: str) -> Any:
    """The README's first form: the deployed graph is the node."""
    builder = StateGraph(AgentState)
    builder.add_node("distill_pipeline", RemoteGraph("pipeline", url=url))
    builder.add_node("report", lambda state: {"report": state["final_summary"]})
    builder.add_edge(START, "distill_pipeline")
    builder.add_edge("distill_pipeline", "report")
    builder.add_edge("report", END)
    return builder.compile()


def calling_agent(url: str) -> Any:
    """The README's second form: a node of yours calls the deployed graph with its context."""
    remote = RemoteGraph("pipeline", url=url)

    async def distill_pipeline(state: AgentState) -> dict[str, Any]:
        output = await remote.ainvoke(
            {"target_rounds": state["target_rounds"]},
            context={"split_method": "turns", "max_turns": 4},
            config={"recursion_limit": recursion_limit(state["target_rounds"]) + 50},
        )
        return {key: output[key] for key in ("conversation_record", "final_summary")}

    builder = StateGraph(AgentState)
    builder.add_node("distill_pipeline", distill_pipeline)
    builder.add_node("report", lambda state: {"report": state["final_summary"]})
    builder.add_edge(START, "distill_pipeline")
    builder.add_edge("distill_pipeline", "report")
    builder.add_edge("report", END)
    return builder.compile()


def check(result: dict[str, Any]) -> None:
    record = result["conversation_record"]
    assert record["total_rounds"] == ROUNDS
    assert record["metadata"]["model"] == SERVER_MODEL  # generated on the server
    assert result["report"] == result["final_summary"] and result["final_summary"].strip()


async def test_a_deployed_graph_is_a_node_of_another_graph(agent_server: DevServer) -> None:
    calls_before = agent_server.fake.calls
    result = await direct_agent(agent_server.url).ainvoke({"target_rounds": ROUNDS})

    check(result)
    assert agent_server.fake.calls > calls_before


async def test_a_node_calls_the_deployed_graph_with_its_own_context(
    agent_server: DevServer,
) -> None:
    result = await calling_agent(agent_server.url).ainvoke({"target_rounds": ROUNDS})

    check(result)
    assert set(result) == {"target_rounds", "conversation_record", "final_summary", "report"}
