"""A local Agent Server cluster: one PostgreSQL cluster, one Redis and N ``langgraph-api``
processes on the open Postgres + Redis runtime (``langgraph-runtime-pg``), all serving this
repository's graphs and pulling from the same run queue; torn down on Ctrl-C. The test suite
and bench/bench_server_scale.py start their servers with this same code.

    python scripts/agent_cluster.py [--processes 2] [--jobs-per-worker 8] [--heartbeat 120]
        [--python .venv-pg/bin/python] [--port 2024]

The servers take the model settings (MIMO_API_KEY, MIMO_BASE_URL, MIMO_MODEL, ...) from this
environment. The first process listens on --port, the next ones on the ports after it; point
``graph-distill run --server`` at any of them. Needs PostgreSQL's server programs (Debian:
postgresql), redis-server, and a Python with ``graph-distill[postgres-server]`` installed.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = REPO_ROOT / "langgraph.json"
# Generous: a cold start imports langgraph-api and the graphs on a busy 2-core machine.
STARTUP_TIMEOUT_SECONDS = 180.0
STOP_TIMEOUT_SECONDS = 15.0
LOG_TAIL_LINES = 40
# The engine's default heartbeat (langgraph-api's BG_JOB_HEARTBEAT), in seconds.
DEFAULT_HEARTBEAT = 120.0


class ServerStartError(RuntimeError):
    """A server exited or did not answer in time; the message ends with its log's tail."""


@dataclass
class ServerProcess:
    """One server process: its URL, its log, and the process (a group of its own)."""

    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    def log_tail(self) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def kill(self) -> None:
        """``kill -9`` of the whole process: a lost machine, no clean shutdown."""
        _signal_group(self.process, signal.SIGKILL)
        self.process.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/ok", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def launch(
    command: Sequence[str], env: Mapping[str, str], workdir: Path, port: int, log_path: Path
) -> ServerProcess:
    """Start a server process listening on ``port`` (not waiting for it)."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(command),
            cwd=workdir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServerProcess(f"http://127.0.0.1:{port}", log_path, process)


def wait_until_up(server: ServerProcess) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while not answers(server.url):
        if server.process.poll() is not None:
            raise ServerStartError(
                f"the server exited with code {server.process.returncode} before answering; "
                f"log tail:\n{server.log_tail()}"
            )
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"the server did not answer {server.url}/ok within "
                f"{STARTUP_TIMEOUT_SECONDS:.0f}s; log tail:\n{server.log_tail()}"
            )
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    """End a server's whole process group: SIGTERM, then SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _signal_group(process, sig):
            return
        try:
            process.wait(STOP_TIMEOUT_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> bool:
    try:
        os.killpg(process.pid, sig)
        return True
    except ProcessLookupError:
        return False


@contextmanager
def serving(
    command: Sequence[str], env: Mapping[str, str], workdir: Path, port: int, log_path: Path
) -> Iterator[ServerProcess]:
    """A server process, up and answering, stopped on exit."""
    server = launch(command, env, workdir, port, log_path)
    try:
        wait_until_up(server)
        yield server
    finally:
        stop(server.process)


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
    command = [program, "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no"]
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


def runtime_env(
    database_uri: str, redis_uri: str, jobs_per_worker: int, heartbeat: float | None
) -> dict[str, str]:
    """What makes ``langgraph-api`` run this repository's graphs on Postgres + Redis."""
    graphs = json.loads(CONFIG_PATH.read_text())["graphs"]
    env = {
        "LANGGRAPH_RUNTIME_EDITION": "pg",
        "DATABASE_URI": database_uri,
        "REDIS_URI": redis_uri,
        "N_JOBS_PER_WORKER": str(jobs_per_worker),
        "LANGSERVE_GRAPHS": json.dumps(graphs),
    }
    if heartbeat is not None:
        env["LG_BG_JOB_HEARTBEAT"] = str(heartbeat)
    return env


@contextmanager
def cluster_running(
    workdir: Path,
    python: str,
    *,
    processes: int = 1,
    jobs_per_worker: int = 8,
    heartbeat: float | None = None,
    env: Mapping[str, str] | None = None,
    process_env: Sequence[Mapping[str, str]] = (),
    ports: Sequence[int] = (),
) -> Iterator[list[ServerProcess]]:
    """PostgreSQL, Redis and ``processes`` servers (uvicorn serving ``langgraph_api``, as a
    self-hosted deployment runs it) with ``env`` (default: this environment), process ``i``
    also with ``process_env[i]``; the servers, all up. The first one starts alone (it creates
    the database's tables), the others then together."""
    base = dict(os.environ if env is None else env)
    ports = list(ports) or [free_port() for _ in range(processes)]
    with postgres_running() as database_uri, redis_running() as redis_uri, ExitStack() as stack:
        runtime = runtime_env(database_uri, redis_uri, jobs_per_worker, heartbeat)
        servers: list[ServerProcess] = []
        for index, port in enumerate(ports):
            extra = process_env[index] if index < len(process_env) else {}
            command = [python, "-m", "uvicorn", "langgraph_api.server:app"]
            command += ["--host", "127.0.0.1", "--port", str(port)]
            log_path = workdir / f"server-{index}.log"
            server = launch(command, {**base, **runtime, **extra}, workdir, port, log_path)
            stack.callback(stop, server.process)
            servers.append(server)
            if index == 0:
                wait_until_up(server)
        for server in servers[1:]:
            wait_until_up(server)
        yield servers


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--processes", type=int, default=2, help="server processes (default 2)")
    parser.add_argument(
        "--jobs-per-worker", type=int, default=8, help="runs each process executes at once"
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=None,
        help=f"LG_BG_JOB_HEARTBEAT in seconds (engine default {DEFAULT_HEARTBEAT:.0f}): a "
        "killed process's runs are re-queued after 2 to 4 of them",
    )
    parser.add_argument("--python", default=str(REPO_ROOT / ".venv-pg" / "bin" / "python"))
    parser.add_argument("--port", type=int, default=2024, help="the first process's port")
    options = parser.parse_args()
    if options.processes < 1 or options.jobs_per_worker < 1:
        parser.error("--processes and --jobs-per-worker must be at least 1")
    if not Path(options.python).exists():
        parser.error(
            f"--python {options.python} not found: make a venv with "
            "`pip install -e '.[postgres-server]'` and name its python"
        )
    ports = [options.port + index for index in range(options.processes)]
    with tempfile.TemporaryDirectory(prefix="graph-distill-cluster-") as workdir:
        try:
            with cluster_running(
                Path(workdir),
                options.python,
                processes=options.processes,
                jobs_per_worker=options.jobs_per_worker,
                heartbeat=options.heartbeat,
                ports=ports,
            ) as servers:
                for server in servers:
                    print(f"serving {server.url} (log {server.log_path})", flush=True)
                print("Ctrl-C stops the servers, Redis and PostgreSQL", flush=True)
                _wait_for_interrupt(servers)
        except ServerStartError as error:
            sys.exit(f"error: {error}")
        except KeyboardInterrupt:
            pass


def _wait_for_interrupt(servers: Sequence[ServerProcess]) -> None:
    while True:
        for server in servers:
            if server.process.poll() is not None:
                sys.exit(f"error: {server.url} exited; log tail:\n{server.log_tail()}")
        time.sleep(1.0)


if __name__ == "__main__":
    main()
