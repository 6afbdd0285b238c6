"""Agent Servers for the tests that need one, each started once per session (they take tens
of seconds): ``langgraph dev`` (in-memory runtime), and when GRAPH_DISTILL_PG_PYTHON names a
Python with the ``postgres-server`` extra installed (``.ci/run`` sets one up), ``langgraph-api``
on the Postgres + Redis runtime. Both call the fake model server."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.agent_server import (
    DevServer,
    ServerStartError,
    dev_server_running,
    pg_server_running,
)
from tests.support.fake_openai import FakeOpenAIServer

PG_PYTHON_ENV = "GRAPH_DISTILL_PG_PYTHON"


@pytest.fixture(scope="session")
def agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    with FakeOpenAIServer() as fake:
        try:
            with dev_server_running(tmp_path_factory.mktemp("agent-server"), fake) as server:
                yield server
        except ServerStartError as error:
            pytest.fail(str(error))


@pytest.fixture(scope="session")
def pg_agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    python = os.environ.get(PG_PYTHON_ENV)
    if not python:
        pytest.skip(
            f"{PG_PYTHON_ENV} is not set: point it at a Python with graph-distill[postgres-server]"
            " installed (as .ci/run does) to test against a Postgres-backed Agent Server"
        )
    with FakeOpenAIServer() as fake:
        try:
            with pg_server_running(tmp_path_factory.mktemp("pg-server"), fake, python) as server:
                yield server
        except ServerStartError as error:
            pytest.fail(str(error))
