"""Runs that survive a faulty server: 429s (with Retry-After), 500s, dropped connections and cut
streams, broken (half) replies; each alone and all mixed. Every run must end with all its
conversations written and distilled, well-formed, and no reply that did not arrive whole saved.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from graph_distill.cli.main import main
from graph_distill.context import PipelineContext
from graph_distill.conversation.scenarios import builtin_scenarios
from graph_distill.run.driver import RunPlan
from graph_distill.run.generation import run_conversations
from graph_distill.run.progress import Reporter
from tests.support.fake_openai import FakeOpenAIServer, FaultRates, _Fault
from tests.support.files import json_files
from tests.support.roles import RoleResponder

CONVERSATIONS = 20
RETRY_AFTER = 0.05
FAULTS = {
    "429": FaultRates(rate_429=0.10, retry_after=RETRY_AFTER, seed=1),
    "500": FaultRates(rate_500=0.05, seed=2),
    "drop": FaultRates(rate_drop=0.05, seed=3),
    "broken_json": FaultRates(rate_broken_json=0.20, seed=4),
    "mixed": FaultRates(
        rate_429=0.10,
        rate_500=0.05,
        rate_drop=0.05,
        rate_broken_json=0.20,
        retry_after=RETRY_AFTER,
        seed=5,
    ),
}


class WitnessServer(FakeOpenAIServer):
    """A fake server that also keeps each reply text it sent whole (a dropped reply is cut off
    midway, so it is left out; a broken one is kept as the half that was sent)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(RoleResponder(), **kwargs)
        self.whole_replies: set[str] = set()

    def _reply(self, body: dict[str, Any], kind: str | None) -> Any:
        reply = super()._reply(body, kind)
        if kind != "drop":
            self.whole_replies.add(reply.text.strip())
        return reply


def read_all(directory: Path) -> dict[Path, dict[str, Any]]:
    return {path: json.loads(path.read_text()) for path in json_files(directory)}


def check_conversation(data: dict[str, Any], whole_replies: set[str]) -> None:
    messages = data["conversation"]
    roles = [message["role"] for message in messages]
    assert roles == ["user", "assistant"] * data["total_rounds"]
    assert 2 <= data["total_rounds"] <= 3
    assert all(message["content"].strip() for message in messages)
    for message in messages[1::2]:
        assert message["content"] in whole_replies, "a reply that did not arrive whole was saved"


def check_distilled(data: dict[str, Any], conversation: dict[str, Any]) -> None:
    chunks = data["distilled_chunks"]
    assert data["total_chunks"] == len(chunks) >= 1
    assert isinstance(data["final_summary"], str)
    source_messages = [(m["role"], m["content"]) for m in conversation["conversation"]]
    for chunk in chunks:
        kept = [(m["role"], m["content"]) for m in chunk["original_messages"]]
        assert kept and all(message in source_messages for message in kept)
        if chunk["status"] == "ok":
            assert chunk["distilled_content"].strip() and chunk["notes"]["topic"] is not None
        else:
            assert chunk["status"] == "raw" and chunk["error"]


# Runs of --resume allowed for chunks that a 20% broken-JSON rate left without notes.
RAW_RETRIES = 3


def only_raw_notes_failed(output: str) -> bool:
    failed = [line for line in output.splitlines() if line.startswith("  ")]
    return bool(failed) and all("no chunk got usable notes" in line for line in failed)


def check_run(tmp_path: Path, server: WitnessServer) -> None:
    conversations = read_all(tmp_path / "conv")
    distilled = read_all(tmp_path / "dist")
    assert len(conversations) == CONVERSATIONS
    assert len(distilled) == CONVERSATIONS
    by_stem = {path.stem: data for path, data in conversations.items()}
    for path, data in distilled.items():
        source = by_stem[path.stem.removeprefix("distilled_")]
        check_conversation(source, server.whole_replies)
        check_distilled(data, source)


@pytest.mark.parametrize("kind", list(FAULTS))
def test_cli_run_survives_faults(kind: str, tmp_path: Path) -> None:
    with WitnessServer(faults=FAULTS[kind]) as server:
        args = [
            "run",
            "--base-url",
            server.base_url,
            "--api-key",
            "sk-test",
            "-c",
            str(tmp_path / "conv"),
            "-d",
            str(tmp_path / "dist"),
            "-n",
            str(CONVERSATIONS),
            "--min-rounds",
            "2",
            "--max-rounds",
            "3",
            "-j",
            "8",
            "--seed",
            "17",
            "-q",
        ]
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        faults = server.fault_counts
        for _ in range(RAW_RETRIES):
            if result.exit_code != 1:
                break
            # A chunk whose every attempt came back broken is kept raw: counted as a failure,
            # never silent, and the next run (--resume) redoes it.
            assert only_raw_notes_failed(result.output), result.output
            result = CliRunner().invoke(main, [*args, "--resume"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    injected = {"mixed": ("429", "500", "drop", "broken_json")}.get(kind, (kind,))
    assert all(faults.get(fault, 0) > 0 for fault in injected), faults
    check_run(tmp_path, server)


class StreamCutter(WitnessServer):
    """Also cuts every ``every``-th streamed reply midway, but never one request twice (its
    node would run out of attempts, and the run would rightly fail)."""

    def __init__(self, every: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.every = every
        self._streamed = itertools.count(1)
        self._cut: set[str] = set()

    def _decide(self, body: dict[str, Any], headers: dict[str, str], roll: float) -> Any:
        if body.get("stream") and next(self._streamed) % self.every == 0:
            request = json.dumps(body["messages"], sort_keys=True)
            if request not in self._cut:
                self._cut.add(request)
                return _Fault("drop", after_chunks=2)
        return super()._decide(body, headers, roll)


class StreamingReporter(Reporter):
    """Asks for streamed replies, as the live view does, and keeps what streamed."""

    shows_tokens = True

    def __init__(self) -> None:
        self.streamed: list[str] = []

    def assistant_token(self, label: str, text: str) -> None:
        self.streamed.append(text)


async def test_cut_streams_are_never_saved(tmp_path: Path) -> None:
    reporter = StreamingReporter()
    others = FaultRates(rate_429=0.10, rate_500=0.05, rate_broken_json=0.20, retry_after=0.05)
    with StreamCutter(every=4, faults=others) as server:
        ctx = PipelineContext(
            base_url=server.base_url, api_key="sk-test", min_rounds=2, max_rounds=3
        )
        plan = RunPlan(
            count=CONVERSATIONS,
            conversation_dir=tmp_path / "conv",
            distilled_dir=tmp_path / "dist",
            scenarios=builtin_scenarios(),
            seed=23,
            concurrency=8,
        )
        summary = await run_conversations(plan, ctx, reporter)
        for _ in range(RAW_RETRIES):
            if not summary.failures:
                break
            assert all("no chunk got usable notes" in why for _, why in summary.failures)
            plan.run_id = summary.run_id
            summary = await run_conversations(plan, ctx, reporter)
        records = server.records
    assert not summary.failures
    cut = [r for r in records if r.fault == "drop"]
    assert len(cut) >= 5 and all(r.body.get("stream") for r in cut)
    assert reporter.streamed
    check_run(tmp_path, server)
