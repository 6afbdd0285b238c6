import importlib.metadata
import importlib.util
import json
import os
import socket
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI

from graph_distill.llm import local_model
from graph_distill.llm.local_model import (
    LocalModelError,
    LocalModelServer,
    check_gguf,
    default_model_path,
)


class FakeServer(LocalModelServer):
    """Launches a small Python script instead of llama_cpp.server and records its pid."""

    def __init__(self, model_path: Path, script: str, **kwargs: object) -> None:
        super().__init__(model_path, **kwargs)  # type: ignore[arg-type]
        self.script = script
        self.launched_pids: list[int] = []

    def _command(self, port: int) -> list[str]:
        return [sys.executable, "-c", self.script, str(port)]

    def _launch(self, command: Sequence[str]) -> None:
        super()._launch(command)
        assert self._process is not None
        self.launched_pids.append(self._process.pid)


ANSWERING_SERVER = """
import http.server, pathlib, sys, tempfile
root = pathlib.Path(tempfile.mkdtemp())
(root / "v1").mkdir()
(root / "v1" / "models").write_text('{"data": []}')
handler = lambda *args: http.server.SimpleHTTPRequestHandler(*args, directory=str(root))
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
"""
SILENT_SERVER = "import time; time.sleep(600)"
STUBBORN_SERVER = (
    "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + ANSWERING_SERVER
)
DYING_SERVER = "import sys; print('error loading model: boom', flush=True); sys.exit(3)"


@pytest.fixture
def gguf_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + bytes(60))
    return path


def assert_gone(pids: list[int]) -> None:
    assert pids, "no process was launched"
    for pid in pids:
        # Also fails for a zombie: signalling an unreaped process still succeeds.
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)


def test_check_gguf_accepts_gguf_magic(gguf_file: Path) -> None:
    check_gguf(gguf_file)


def test_check_gguf_rejects_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(LocalModelError, match="does not exist") as caught:
        check_gguf(missing)
    assert str(missing) in str(caught.value)


def test_check_gguf_rejects_directory(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="is not a file"):
        check_gguf(tmp_path)


def test_check_gguf_rejects_other_files(tmp_path: Path) -> None:
    not_gguf = tmp_path / "model.bin"
    not_gguf.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(LocalModelError, match="not a GGUF file") as caught:
        check_gguf(not_gguf)
    assert str(not_gguf) in str(caught.value)


def test_server_refuses_missing_model(tmp_path: Path) -> None:
    with pytest.raises(LocalModelError, match="does not exist"):
        LocalModelServer(tmp_path / "absent.gguf")


def test_default_model_path_without_package_gives_install_hint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> importlib.metadata.Distribution:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(LocalModelError) as caught:
        default_model_path()
    message = str(caught.value)
    assert "pip install 'graph-distill[local]'" in message
    assert "MIMO_API_KEY" in message
    assert "\n" not in message


def test_missing_llama_cpp_gives_install_hint(
    gguf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "llama_cpp" else real_find_spec(name, *args),
    )
    server = LocalModelServer(gguf_file)
    with pytest.raises(LocalModelError, match=r"llama_cpp.*graph-distill\[local\]"):
        server.start()
    assert server._process is None


def test_taken_port_is_refused_before_launching(gguf_file: Path) -> None:
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        port = occupant.getsockname()[1]
        server = FakeServer(gguf_file, ANSWERING_SERVER, port=port)
        with pytest.raises(LocalModelError, match=f"^port {port} on 127.0.0.1 is in use$"):
            server.start()
    assert server.launched_pids == []


def test_server_dying_at_startup_reports_its_log(gguf_file: Path) -> None:
    server = FakeServer(gguf_file, DYING_SERVER)
    with pytest.raises(LocalModelError, match="exited during startup") as caught:
        server.start()
    message = str(caught.value)
    assert "code 3" in message
    assert "error loading model: boom" in message
    assert "\n" not in message
    assert_gone(server.launched_pids)


def test_server_never_answering_is_stopped(gguf_file: Path) -> None:
    server = FakeServer(gguf_file, SILENT_SERVER, startup_timeout=0.3)
    with pytest.raises(LocalModelError, match=r"did not answer within 0.3s"):
        server.start()
    assert_gone(server.launched_pids)


def test_server_ignoring_sigterm_is_killed(
    gguf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_model, "STOP_GRACE_SECONDS", 0.2)
    server = FakeServer(gguf_file, STUBBORN_SERVER)
    server.start()
    server.stop()
    assert_gone(server.launched_pids)


def test_log_goes_to_the_given_file(gguf_file: Path, tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    server = FakeServer(gguf_file, DYING_SERVER, log_path=log_path)
    with pytest.raises(LocalModelError):
        server.start()
    assert "error loading model: boom" in log_path.read_text()


def test_started_server_runs_in_its_own_process_group_and_stops(gguf_file: Path) -> None:
    server = FakeServer(gguf_file, ANSWERING_SERVER)
    with server:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        with urllib.request.urlopen(f"{server.base_url}/models", timeout=5) as response:
            assert response.status == 200
        (pid,) = server.launched_pids
        assert os.getpgid(pid) == pid != os.getpgid(0)
    assert_gone(server.launched_pids)
    server.stop()


def test_keyboard_interrupt_inside_the_block_stops_the_server(gguf_file: Path) -> None:
    server = FakeServer(gguf_file, ANSWERING_SERVER)
    with pytest.raises(KeyboardInterrupt), server:
        raise KeyboardInterrupt
    assert_gone(server.launched_pids)


def test_keyboard_interrupt_during_startup_stops_the_server(
    gguf_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(url: str) -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(local_model, "_answers", interrupted)
    server = FakeServer(gguf_file, SILENT_SERVER)
    with pytest.raises(KeyboardInterrupt):
        server.start()
    assert_gone(server.launched_pids)


def test_default_model_is_the_smollm2_gguf() -> None:
    path = default_model_path()
    check_gguf(path)
    assert "smollm2" in path.name.lower()


@pytest.fixture(scope="module")
def smollm2() -> Iterator[LocalModelServer]:
    with LocalModelServer() as server:
        yield server


def test_smollm2_answers_through_chat_openai(smollm2: LocalModelServer) -> None:
    chat = ChatOpenAI(
        base_url=smollm2.base_url,
        api_key="local",
        model=smollm2.model_name,
        temperature=0,
        max_tokens=40,
    )
    reply = chat.invoke("What is the capital of France? Answer in one sentence.")
    assert isinstance(reply.content, str)
    assert "paris" in reply.content.lower()


def test_smollm2_json_mode_returns_json(smollm2: LocalModelServer) -> None:
    chat = ChatOpenAI(
        base_url=smollm2.base_url,
        api_key="local",
        model=smollm2.model_name,
        temperature=0,
        max_tokens=120,
        model_kwargs={"response_format": {"type": "json_object"}},
    )
    reply = chat.invoke(
        'Describe the city of Paris as a JSON object with the keys "city" and "country".'
    )
    assert isinstance(reply.content, str)
    assert isinstance(json.loads(reply.content), dict)
