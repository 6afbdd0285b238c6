"""Realism distance: two halves of real conversations close, degenerate SmolLM2 far."""

from __future__ import annotations

import json
from pathlib import Path

from graph_distill.report.realism import RealismSide, compare_realism, ks, mattr

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
HALF_FLOOR = 0.25
DEGENERATE_CEILING = 0.35


def _side(paths: list[Path]) -> RealismSide:
    side = RealismSide()
    for path in paths:
        side.add(json.loads(path.read_text())["conversation"])
    return side


def _healthy() -> list[Path]:
    return sorted((FIXTURES / "healthy").glob("*.json"))


def test_real_halves_are_close_and_degenerate_far() -> None:
    healthy = _healthy()
    first, second = _side(healthy[::2]), _side(healthy[1::2])
    halves = compare_realism(first, second)["distance"]
    degenerate = _side(sorted((FIXTURES / "degenerate").glob("*.json")))
    far = compare_realism(degenerate, _side(healthy))["distance"]
    print(f"halves {halves}, degenerate {far}")
    assert halves is not None and halves < HALF_FLOOR
    assert far is not None and far > DEGENERATE_CEILING
    assert far > 2 * halves


def test_side_round_trips_through_json() -> None:
    side = _side(_healthy())
    again = RealismSide.from_json(json.loads(json.dumps(side.to_json())))
    assert compare_realism(side, again)["distance"] == 0


def test_ks_and_mattr() -> None:
    assert ks([1, 0], [0, 1]) == 1
    assert ks([0, 0], [1, 1]) is None
    assert mattr(["a"] * 60) < 0.05
    assert mattr([str(i) for i in range(60)]) == 1
