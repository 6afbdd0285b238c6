"""Shared fixtures: a clean environment so no real key, URL or .env leaks into a test."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph_distill.llm.settings import ENV_NAMES


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
