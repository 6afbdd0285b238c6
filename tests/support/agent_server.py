"""``langgraph dev`` (an Agent Server with an in-memory runtime) serving the graphs of
langgraph.json, for tests and benchmarks.

The server runs as a subprocess from a temporary folder holding a verbatim copy of the repo's
langgraph.json (so a developer's real ``.env`` never leaks in, and a fresh clone's missing
``.env`` is what the server sees), with the MIMO_* settings pointing at a fake model server.
"""

from __future__ import annotations

import getpass
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from langgraph_sdk import get_client, get_sync_client
from langgraph_sdk.client import LangGraphClient, SyncLangGraphClient

from graph_distill.llm.settings import ENV_NAMES
from tests.support.fake_openai import FakeOpenAIServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_PATH = REPO_ROOT / "langgraph.json"
# Generous: a cold start imports langgraph-api and the graphs on a busy 2-core machine.
STARTUP_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 15.0
LOG_TAIL_LINES = 40
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


class ServerStartError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log's tail."""


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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_env(fake: FakeOpenAIServer) -> dict[str, str]:
    dropped = {*ENV_NAMES.values(), *ONLINE_ENV_NAMES}
    env = {name: value for name, value in os.environ.items() if name not in dropped}
    return {
        **env,
        **OFFLINE_ENV,
        "MIMO_BASE_URL": fake.base_url,
        "MIMO_API_KEY": SERVER_MODEL_KEY,
        "MIMO_MODEL": SERVER_MODEL,
    }


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_up(process: subprocess.Popen[bytes], server: DevServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not answers(server.url):
        if process.poll() is not None:
            raise ServerStartError(
                f"langgraph dev exited with code {process.returncode} before answering; "
                f"log tail:\n{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"langgraph dev did not answer {server.url}/ok within "
                f"{STARTUP_TIMEOUT_SECONDS:.0f}s; log tail:\n{server.log_tail()}"
            )
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    """End the server's whole process group: SIGTERM, then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


@contextmanager
def dev_server_running(
    workdir: Path, fake: FakeOpenAIServer, extra_args: Sequence[str] = ()
) -> Iterator[DevServer]:
    """``langgraph dev`` on a free port of 127.0.0.1, its model calls going to ``fake``."""
    shutil.copy(CONFIG_PATH, workdir / "langgraph.json")
    port = free_port()
    command = [sys.executable, "-m", "langgraph_cli", "dev", "--no-browser", "--no-reload"]
    command += ["--host", "127.0.0.1", "--port", str(port), *extra_args]
    with _serving(command, server_env(fake), workdir, fake, port) as server:
        yield server


@contextmanager
def pg_server_running(
    workdir: Path, fake: FakeOpenAIServer, python: str, jobs_per_worker: int = 8
) -> Iterator[DevServer]:
    """The Agent Server (``langgraph-api``) on the open Postgres + Redis runtime
    (``langgraph-runtime-pg``, installed for ``python``), with a PostgreSQL cluster and a Redis
    server of its own, as a self-hosted deployment runs it (uvicorn serving the API)."""
    graphs = json.loads(CONFIG_PATH.read_text())["graphs"]
    with postgres_running() as database_uri, redis_running() as redis_uri:
        env = {
            **server_env(fake),
            "LANGGRAPH_RUNTIME_EDITION": "pg",
            "DATABASE_URI": database_uri,
            "REDIS_URI": redis_uri,
            "N_JOBS_PER_WORKER": str(jobs_per_worker),
            "LANGSERVE_GRAPHS": json.dumps(graphs),
        }
        port = free_port()
        command = [python, "-m", "uvicorn", "langgraph_api.server:app"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        with _serving(command, env, workdir, fake, port) as server:
            yield server


@contextmanager
def _serving(
    command: list[str], env: dict[str, str], workdir: Path, fake: FakeOpenAIServer, port: int
) -> Iterator[DevServer]:
    server = DevServer(f"http://127.0.0.1:{port}", workdir, workdir / "server.log", fake)
    with server.log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server.process = process
    try:
        wait_until_up(process, server)
        yield server
    finally:
        stop(process)


def postgres_program(name: str) -> str:
    """A PostgreSQL server program: Debian keeps them out of PATH, under its major version."""
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        raise ServerStartError(f"{name} not found: install PostgreSQL (Debian: postgresql)")
    return str(found[-1])


@contextmanager
def postgres_running() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port; its connection URI. As root, the cluster
    runs as the ``postgres`` user (PostgreSQL refuses to run as root)."""
    as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="graph-distill-pg-"))
    if as_owner:
        shutil.chown(data, "postgres")
    pg_ctl = [*as_owner, postgres_program("pg_ctl"), "-D", str(data)]
    port = free_port()
    try:
        _checked([*as_owner, postgres_program("initdb"), "-D", str(data), "-A", "trust"])
        options = f"-p {port} -k {data} -h 127.0.0.1"
        _checked([*pg_ctl, "-l", str(data / "server.log"), "-o", options, "-w", "start"])
        try:
            user = "postgres" if as_owner else getpass.getuser()
            yield f"postgres://{user}@127.0.0.1:{port}/postgres"
        finally:
            _checked([*pg_ctl, "-m", "immediate", "stop"])
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextmanager
def redis_running() -> Iterator[str]:
    """A Redis server on a free port, keeping nothing on disk; its URI."""
    program = shutil.which("redis-server")
    if program is None:
        raise ServerStartError("redis-server not found: install Redis (Debian: redis-server)")
    port = free_port()
    command = [
        program,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while not _accepts(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise ServerStartError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(STOP_TIMEOUT_SECONDS)


def _accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _checked(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise ServerStartError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
