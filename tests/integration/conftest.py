"""Agent Servers for the tests that need one, each started once per session (they take tens
of seconds): ``langgraph dev`` (in-memory runtime), and when GRAPH_DISTILL_PG_PYTHON names a
Python with the ``postgres-server`` extra installed (``.ci/run`` sets one up), ``langgraph-api``
on the Postgres + Redis runtime. Both call the fake model server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.agent_cluster import ServerStartError
from tests.support.agent_server import (
    DevServer,
    dev_server_running,
    pg_cluster_running,
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


def pg_python() -> str:
    python = os.environ.get(PG_PYTHON_ENV)
    if not python:
        pytest.skip(
            f"{PG_PYTHON_ENV} is not set: point it at a Python with graph-distill[postgres-server]"
            " installed (as .ci/run does) to test against a Postgres-backed Agent Server"
        )
    return python


@pytest.fixture(scope="session")
def pg_agent_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    python = pg_python()
    with FakeOpenAIServer() as fake:
        try:
            with pg_server_running(tmp_path_factory.mktemp("pg-server"), fake, python) as server:
                yield server
        except ServerStartError as error:
            pytest.fail(str(error))


# A killed process's runs come back after 2 to 4 heartbeats (the engine's minimum is 1 s).
CLUSTER_HEARTBEAT = 1.0


@pytest.fixture
def pg_cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[DevServer]]:
    """Two ``langgraph-api`` processes with 2 jobs each on one PostgreSQL and one Redis, each
    calling a fake model server of its own; a short heartbeat, so that a killed process's runs
    are re-queued within seconds (an indirect parameter sets another; None: the engine's).
    Per test: tests kill its processes."""
    python = pg_python()
    heartbeat = getattr(request, "param", CLUSTER_HEARTBEAT)
    with FakeOpenAIServer() as first, FakeOpenAIServer() as second:
        try:
            with pg_cluster_running(
                tmp_path,
                [first, second],
                python,
                jobs_per_worker=2,
                heartbeat=heartbeat,
            ) as servers:
                yield servers
        except ServerStartError as error:
            pytest.fail(str(error))
