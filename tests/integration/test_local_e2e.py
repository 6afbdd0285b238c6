"""End to end through the real embedded model: no key, no URL, `run` just works.

Slow (minutes on 2 cores): SmolLM2-135M reads prompts at about 100 tokens/s. It needs the
``local`` extra, which CI installs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from graph_distill.llm.settings import ENV_NAMES
from tests.support.files import json_files


def test_run_on_the_embedded_model_writes_conversations_and_distillations(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES.values()}
    servers_before = _local_servers()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "graph_distill",
            "run",
            "-n",
            "2",
            "--min-rounds",
            "3",
            "--max-rounds",
            "3",
            "--seed",
            "1",
            "-j",
            "2",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "using the embedded local model" in done.stderr
    conversations = json_files(tmp_path / "conversations")
    distilled = json_files(tmp_path / "distilled")
    assert len(conversations) == 2
    assert [p.name for p in distilled] == [f"distilled_{c.stem}.json" for c in conversations]
    for path in conversations:
        data = json.loads(path.read_text())
        roles = [m["role"] for m in data["conversation"]]
        assert roles == ["user", "assistant"] * data["total_rounds"]
        assert data["total_rounds"] == 3
        assert all(m["content"].strip() for m in data["conversation"])
        assert data["metadata"]["model"].startswith("SmolLM2")
        assert data["metadata"]["usage"]["input_tokens"] > 0
    for path in distilled:
        data = json.loads(path.read_text())
        assert data["total_chunks"] == len(data["distilled_chunks"]) >= 1
        for chunk in data["distilled_chunks"]:
            assert chunk["original_messages"] and chunk["distilled_content"].strip()
        assert data["metadata"]["usage"]["calls"] >= 1
    assert _local_servers() == servers_before  # no server left behind


def _local_servers() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "llama_cpp.server"], capture_output=True, text=True)
    return set(found.stdout.split())
