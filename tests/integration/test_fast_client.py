"""The fast path's contract with the libraries it reaches into: its check passes on the
installed versions, and a missing or changed internal sends the run down the stock path with
one plain line (the check's input is what changes here: the libraries run as installed)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from langchain_openai import ChatOpenAI

from graph_distill.context import ModelContext, SettingError
from graph_distill.files.writing import RUN_REPORT_NAME
from graph_distill.llm.fast_client import INTERNALS, FastChatOpenAI, Internal, contract_problem
from graph_distill.llm.models import chat_model
from graph_distill.llm.resources import RunResources
from tests.integration.test_cli import invoke, run_args
from tests.support.fake_openai import FakeOpenAIServer
from tests.support.files import json_files
from tests.support.roles import RoleResponder


@pytest.fixture
def fake() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


def test_the_installed_libraries_hold_the_contract() -> None:
    assert contract_problem() is None


def test_a_changed_signature_is_named_with_its_package_version() -> None:
    changed = Internal("openai", "openai", "AsyncOpenAI._build_request", ("self", "request"))
    line = contract_problem((changed,))
    assert line is not None and "\n" not in line
    assert line.startswith("openai ") and "(not installed)" not in line
    assert "AsyncOpenAI._build_request takes (self, options, retries_taken" in line


async def test_a_missing_internal_falls_back_to_stock_with_one_line(
    fake: FakeOpenAIServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAPH_DISTILL_STOCK", raising=False)  # the check runs
    missing = Internal("langchain-openai", "langchain_openai", "ChatOpenAI._gone_in_a_release")
    ctx = ModelContext(base_url=fake.base_url, api_key="k", model="m", max_retries=0)
    with caplog.at_level(logging.WARNING):
        async with RunResources(aiohttp=True, internals=(*INTERNALS, missing)) as resources:
            model = chat_model(ctx, "user", temperature=0.5, max_tokens=8, resources=resources)
            again = chat_model(ctx, "assistant", temperature=0.5, max_tokens=8, resources=resources)
            reply = await model.ainvoke([HumanMessage("hi")])
    assert resources.stock
    assert type(model) is ChatOpenAI and type(again) is ChatOpenAI
    assert reply.text and resources.stats().requests == 1
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith("langchain-openai 1.")
    assert "ChatOpenAI._gone_in_a_release is missing; using the stock model client" in lines[0]
    assert "Traceback" not in caplog.text


async def test_the_fast_path_says_nothing(
    fake: FakeOpenAIServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAPH_DISTILL_STOCK", raising=False)
    ctx = ModelContext(base_url=fake.base_url, api_key="k", model="m", max_retries=0)
    with caplog.at_level(logging.WARNING):
        async with RunResources(aiohttp=True) as resources:
            model = chat_model(ctx, "user", temperature=0.5, max_tokens=8, resources=resources)
            await model.ainvoke([HumanMessage("hi")])
    assert isinstance(model, FastChatOpenAI) and not resources.stock
    assert caplog.records == []


def test_the_environment_switch_chooses_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRAPH_DISTILL_STOCK", "1")
    assert RunResources().stock
    monkeypatch.setenv("GRAPH_DISTILL_STOCK", "0")
    assert not RunResources().stock
    assert RunResources(stock=True).stock
    monkeypatch.setenv("GRAPH_DISTILL_STOCK", "maybe")
    with pytest.raises(SettingError, match="GRAPH_DISTILL_STOCK must be 1 or 0"):
        RunResources()


def _conversations(directory: Path) -> list[list[dict[str, str]]]:
    return [json.loads(path.read_text())["conversation"] for path in json_files(directory)]


def test_both_paths_give_the_same_conversations_and_report_their_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRAPH_DISTILL_STOCK", raising=False)
    runs = {}
    for path, extra in (("fast", ()), ("stock", ("--stock",))):
        with FakeOpenAIServer(RoleResponder()) as server:
            # One at a time: the fake server numbers its answers in the order requests arrive.
            options = ("-n", "2", "-j", "1", "--seed", "3", "--no-distill", "-q", *extra)
            result = invoke(*run_args(server, tmp_path / path, *options))
            bodies = [record.raw for record in server.records]
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / path / "conv" / RUN_REPORT_NAME).read_text())
        assert report["settings"]["stock"] is (path == "stock")
        runs[path] = (_conversations(tmp_path / path / "conv"), sorted(bodies))
    assert runs["fast"][0] and runs["fast"] == runs["stock"]
