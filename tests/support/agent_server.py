"""``langgraph dev`` (an Agent Server with an in-memory runtime) serving the graphs of
langgraph.json, for tests and benchmarks.

The server runs as a subprocess from a temporary folder holding a verbatim copy of the repo's
langgraph.json (so a developer's real ``.env`` never leaks in, and a fresh clone's missing
``.env`` is what the server sees), with the MIMO_* settings pointing at a fake model server.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
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
    server = DevServer(f"http://127.0.0.1:{port}", workdir, workdir / "server.log", fake)
    command = [sys.executable, "-m", "langgraph_cli", "dev", "--no-browser", "--no-reload"]
    with server.log_path.open("wb") as log:
        process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--port", str(port), *extra_args],
            cwd=workdir,
            env=server_env(fake),
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
