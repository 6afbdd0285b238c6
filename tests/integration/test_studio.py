"""``langgraph dev`` (the server LangGraph Studio talks to) serves the graphs of langgraph.json.

The server runs as a subprocess from a temporary folder holding a verbatim copy of the repo's
langgraph.json (so a developer's real ``.env`` never leaks in, and a fresh clone's missing
``.env`` is what the server sees), with the MIMO_* settings pointing at a fake model server.
"""

from __future__ import annotations

import importlib
from dataclasses import fields
from typing import Any

import pytest
from langgraph_cli.config import validate_config_file

from graph_distill import (
    ConversationContext,
    DistillContext,
    DistillOutput,
    PipelineContext,
    PipelineOutput,
    conversation_graph,
    distill_graph,
    pipeline_graph,
)
from tests.support.agent_server import (
    CONFIG_PATH,
    DevServer,
)

GRAPHS = {"conversation": conversation_graph, "distill": distill_graph, "pipeline": pipeline_graph}
CONTEXTS = {
    "conversation": ConversationContext,
    "distill": DistillContext,
    "pipeline": PipelineContext,
}
SMALL_CONTEXT = {"split_method": "turns", "max_turns": 4}


@pytest.fixture
def dev_server(agent_server: DevServer) -> DevServer:
    return agent_server


async def wait_run(
    server: DevServer, graph_id: str, run_input: dict[str, Any], context: dict[str, Any]
) -> dict[str, Any]:
    client = server.client()
    thread = await client.threads.create()
    try:
        output = await client.runs.wait(
            thread["thread_id"], graph_id, input=run_input, context=context
        )
    except Exception as error:
        pytest.fail(f"{graph_id} run failed: {error}\nserver log tail:\n{server.log_tail()}")
    assert isinstance(output, dict), f"unexpected run output {output!r}"
    return output


def small_conversation(messages: int) -> list[dict[str, str]]:
    roles = ("user", "assistant")
    return [
        {
            "role": roles[turn % 2],
            "content": f"Message {turn}: caching parsed templates avoids repeated disk reads. " * 3,
        }
        for turn in range(messages)
    ]


# ---------------------------------------------------------------- the config file itself


def test_langgraph_json_registers_the_exported_graphs() -> None:
    config = validate_config_file(CONFIG_PATH)
    assert config["env"] == ".env"
    assert set(config["graphs"]) == set(GRAPHS)
    for graph_id, spec in config["graphs"].items():
        module_name, variable = spec.split(":")
        module = importlib.import_module(module_name)
        assert getattr(module, variable) is GRAPHS[graph_id], spec


# ---------------------------------------------------------------- the running server


async def test_starts_without_env_file_and_serves_one_assistant_per_graph(
    dev_server: DevServer,
) -> None:
    assert not (dev_server.workdir / ".env").exists()
    assistants = await dev_server.client().assistants.search(limit=50)
    assert {assistant["graph_id"] for assistant in assistants} == set(GRAPHS)


async def test_distill_run_uses_env_model_settings_and_run_context(dev_server: DevServer) -> None:
    calls_before = dev_server.fake.calls
    conversation = small_conversation(6)
    output = await wait_run(dev_server, "distill", {"conversation": conversation}, SMALL_CONTEXT)

    assert set(output) == set(DistillOutput.__annotations__)
    assert output["final_summary"].strip()
    chunks = output["distilled_chunks"]
    assert len(chunks) >= 2
    assert all(chunk["status"] == "ok" for chunk in chunks)
    assert all(last - first < SMALL_CONTEXT["max_turns"] for first, last in _ranges(chunks))
    assert dev_server.fake.calls - calls_before >= len(chunks) + 1


async def test_pipeline_run_generates_then_distills(dev_server: DevServer) -> None:
    output = await wait_run(dev_server, "pipeline", {"target_rounds": 2, "seed": 7}, SMALL_CONTEXT)

    assert set(output) == set(PipelineOutput.__annotations__)
    record = output["conversation_record"]
    assert record["total_rounds"] == 2
    assert [message["role"] for message in record["conversation"]] == ["user", "assistant"] * 2
    assert output["final_summary"].strip()
    assert output["distilled_chunks"]


@pytest.mark.parametrize("graph_id", sorted(GRAPHS))
async def test_context_schema_shows_every_field_description(
    dev_server: DevServer, graph_id: str
) -> None:
    client = dev_server.client()
    (assistant,) = await client.assistants.search(graph_id=graph_id)
    schemas = await client.assistants.get_schemas(assistant["assistant_id"])
    properties = (schemas.get("context_schema") or {}).get("properties", {})

    expected = {field.name: field.metadata["description"] for field in fields(CONTEXTS[graph_id])}
    served = {name: prop.get("description") for name, prop in properties.items()}
    assert served == expected


def _ranges(chunks: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(chunk["turn_range"][0], chunk["turn_range"][-1]) for chunk in chunks]
