"""``langgraph dev`` (an Agent Server with an in-memory runtime) serving the graphs of
langgraph.json, for tests and benchmarks.

The server runs as a subprocess from a temporary folder holding a verbatim copy of the repo's
langgraph.json (so a developer's real ``.env`` never leaks in, and a fresh clone's missing
``.env`` is what the server sees), with the MIMO_* settings pointing at a fake model server.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.client import LangGraphClient, SyncLangGraphClient

from graph_distill.llm.settings import ENV_NAMES
from scripts.agent_cluster import (
    CONFIG_PATH,
    LOG_TAIL_LINES,
    ServerProcess,
    cluster_running,
    free_port,
    serving,
)
from tests.support.fake_openai import FakeOpenAIServer

# Everything that could make the dev server reach beyond 127.0.0.1.
OFFLINE_ENV = {
    "LANGGRAPH_CLI_NO_ANALYTICS": "1",
    "LANGGRAPH_NO_VERSION_CHECK": "true",
    "LANGSMITH_TRACING": "false",
    "LANGCHAIN_TRACING_V2": "false",
}
ONLINE_ENV_NAMES = (
    "LANGSMITH_API_KEY",
    "LANGCHAIN_API_KEY",
    "LANGGRAPH_CLOUD_LICENSE_KEY",
    "LANGSMITH_CONTROL_PLANE_API_KEY",
)
SERVER_MODEL_KEY = "agent-server-key"
SERVER_MODEL = "fake-model"


@dataclass
class DevServer:
    url: str
    workdir: Path
    log_path: Path
    fake: FakeOpenAIServer
    process: subprocess.Popen[bytes] | None = None

    def log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def client(self) -> LangGraphClient:
        return get_client(url=self.url, api_key=None)

    def sync_client(self) -> SyncLangGraphClient:
        return get_sync_client(url=self.url, api_key=None)

    def kill(self) -> None:
        """``kill -9`` of the server: a lost machine."""
        assert self.process is not None
        ServerProcess(self.url, self.log_path, self.process).kill()


def server_env(fake: FakeOpenAIServer) -> dict[str, str]:
    dropped = {*ENV_NAMES.values(), *ONLINE_ENV_NAMES}
    env = {name: value for name, value in os.environ.items() if name not in dropped}
    return {**env, **OFFLINE_ENV, **model_env(fake)}


def model_env(fake: FakeOpenAIServer) -> dict[str, str]:
    return {
        "MIMO_BASE_URL": fake.base_url,
        "MIMO_API_KEY": SERVER_MODEL_KEY,
        "MIMO_MODEL": SERVER_MODEL,
    }


@contextmanager
def dev_server_running(
    workdir: Path, fake: FakeOpenAIServer, extra_args: Sequence[str] = ()
) -> Iterator[DevServer]:
    """``langgraph dev`` on a free port of 127.0.0.1, its model calls going to ``fake``."""
    shutil.copy(CONFIG_PATH, workdir / "langgraph.json")
    port = free_port()
    command = [sys.executable, "-m", "langgraph_cli", "dev", "--no-browser", "--no-reload"]
    command += ["--host", "127.0.0.1", "--port", str(port), *extra_args]
    with serving(command, server_env(fake), workdir, port, workdir / "server.log") as server:
        yield DevServer(server.url, workdir, server.log_path, fake, server.process)


@contextmanager
def pg_server_running(
    workdir: Path, fake: FakeOpenAIServer, python: str, jobs_per_worker: int = 8
) -> Iterator[DevServer]:
    """The Agent Server (``langgraph-api``) on the open Postgres + Redis runtime
    (``langgraph-runtime-pg``, installed for ``python``), with a PostgreSQL cluster and a Redis
    server of its own, as a self-hosted deployment runs it (uvicorn serving the API)."""
    with pg_cluster_running(workdir, [fake], python, jobs_per_worker=jobs_per_worker) as servers:
        yield servers[0]


@contextmanager
def pg_cluster_running(
    workdir: Path,
    fakes: Sequence[FakeOpenAIServer],
    python: str,
    *,
    jobs_per_worker: int = 8,
    heartbeat: float | None = None,
) -> Iterator[list[DevServer]]:
    """One server process per fake model server, on one PostgreSQL cluster and one Redis
    (scripts/agent_cluster.py): process ``i`` calls ``fakes[i]``, so each fake shows what
    its process's workers do."""
    with cluster_running(
        workdir,
        python,
        processes=len(fakes),
        jobs_per_worker=jobs_per_worker,
        heartbeat=heartbeat,
        env=server_env(fakes[0]),
        process_env=[model_env(fake) for fake in fakes],
    ) as servers:
        yield [
            DevServer(s.url, workdir, s.log_path, fake, s.process)
            for s, fake in zip(servers, fakes, strict=True)
        ]
