"""The one loader of prompt files (``prompts/*.md``, shipped as ``graph_distill.prompts``)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def load_prompt(name: str) -> str:
    """Text of ``prompts/<name>.md``."""
    return resources.files("graph_distill.prompts").joinpath(f"{name}.md").read_text("utf-8")


def render_prompt(name: str, **values: object) -> str:
    """``load_prompt(name)`` with ``{placeholders}`` filled in."""
    return load_prompt(name).format(**values)
