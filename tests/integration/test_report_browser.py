"""The report opened from file:// in a real headless Chromium (Debian's, driven by Playwright):
the page renders without errors, the counts shown are report.json's, the list pages and
searches, and a citation click lands on its turn."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from graph_distill.cli.main import main
from tests.support.synthetic import write_dataset

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    conversations, distilled = write_dataset(root, 60, 10, seed=5, vocab_size=2000)
    out = root / "report"
    result = CliRunner().invoke(
        main, ["report", "-c", str(conversations), "-d", str(distilled), "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any, report_dir: Path) -> Iterator[Any]:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: errors.append(r.url) if not r.url.startswith("file:") else None)
    page.goto((report_dir / "index.html").as_uri())
    yield page
    assert errors == []
    page.close()


def test_the_counts_shown_are_those_of_report_json(page: Any, report_dir: Path) -> None:
    figures = json.loads((report_dir / "report.json").read_text())
    shown = {
        name: page.locator(f'[data-figure="{name}"]').inner_text()
        for name in ("conversations", "rounds", "distilled_files", "topic_switches")
    }
    assert shown == {
        "conversations": f"{figures['conversations']:,}",
        "rounds": f"{figures['rounds']['total']:,}",
        "distilled_files": f"{figures['distilled_files']:,}",
        "topic_switches": f"{figures['topic_switches']['total']:,}",
    }
    assert (
        page.locator('[data-figure="coverage"]').inner_text() == f"{figures['coverage']['share']:g}"
    )
    assert page.locator(".plot svg").count() >= 7
    assert page.locator("#page-info").inner_text() == "page 1 of 2 · 60 of 60 conversations"
    assert page.locator("#list .entry").count() == 50


def test_search_narrows_the_list(page: Any) -> None:
    page.fill("#search", "cooking")
    assert page.locator("#list .entry").count() == 20
    page.fill("#search", "cooking 000004")
    assert page.locator("#list .entry").count() == 1


def test_a_citation_click_lands_on_its_turn(page: Any, report_dir: Path) -> None:
    page.locator("#list .entry").nth(2).click()
    page.wait_for_selector("#turns .turn")
    assert page.locator("#turns .turn").count() == 20
    link = page.locator("#notes a.cite").nth(5)
    turn = link.get_attribute("data-turn")
    link.click()
    target = page.locator(f"#turn-{turn}")
    assert "target" in (target.get_attribute("class") or "")
    assert page.locator(".turn.target").count() == 1
    box, viewport = target.bounding_box(), page.viewport_size
    assert box is not None and 0 <= box["y"] < viewport["height"]
    assert page.evaluate("location.hash").endswith(f"&t={turn}")
    page.screenshot(path=str(report_dir / "viewer.png"))


def test_noised_turns_show_their_clean_text(page: Any) -> None:
    page.goto(page.url + "#c=0&t=14")
    page.wait_for_selector("#turn-14.target")
    noised = page.locator(".turn .noise")
    assert noised.count() >= 1
    assert "Clean text:" in noised.first.inner_text()
