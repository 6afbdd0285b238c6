"""Click options derived from the settings declarations (``graph_distill.context.setting``).

Every field with a flag becomes an option with its description as help, its default shown,
and its bounds enforced by the option's type. Options default to None so that what the user
did not give can be told from what they gave (the environment and ``.env`` fill those).
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

import click

from graph_distill.context import declared, flag_of, from_environment


def option_names(item: Field[Any]) -> list[str]:
    """``-n/--num-conversations`` -> ["-n", "--num-conversations"]."""
    return flag_of(item).split("/")


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; ``tuple[str, ...]`` -> tuple."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return get_origin(annotation) or annotation


def _click_type(item: Field[Any], base: Any) -> click.ParamType | None:
    meta = item.metadata
    if meta.get("choices"):
        return click.Choice(list(meta["choices"]))
    if base is Path:
        return click.Path(path_type=Path)
    if base not in (int, float):
        return None
    low, high, above = meta.get("minimum"), meta.get("maximum"), meta.get("above")
    if low is None and high is None and above is None:
        return click.INT if base is int else click.FLOAT
    if base is int:
        return click.IntRange(min=low, max=high)
    if above is not None:
        return click.FloatRange(min=above, min_open=True, max=high)
    return click.FloatRange(min=low, max=high)


def _help(item: Field[Any], base: Any) -> str:
    meta = item.metadata
    text = meta["description"]
    if meta.get("env"):
        text += f" [env {meta['env']}]"
    default = item.default if item.default is not MISSING else None
    if default not in (None, (), False) and base is not bool:
        text += f" [default: {default}]"
    return text


def settings_option(item: Field[Any], annotation: Any) -> Callable[[Any], Any]:
    base = _base_type(annotation)
    names = option_names(item)
    if base is bool:
        return click.option(*names, item.name, is_flag=True, default=None, help=_help(item, base))
    if base is tuple:
        return click.option(
            *names, item.name, multiple=True, metavar="NAME", help=_help(item, base)
        )
    return click.option(
        *names, item.name, type=_click_type(item, base), default=None, help=_help(item, base)
    )


def options_from(
    *classes: type, exclude: Iterable[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding an option for every flagged field of ``classes`` (first class's
    fields first in ``--help``), each field once."""
    skip = set(exclude)
    chosen: dict[str, Callable[[Any], Any]] = {}
    for cls in classes:
        hints = get_type_hints(cls)
        for item in _most_specific_first(cls):
            if item.metadata.get("flag") and item.name not in skip and item.name not in chosen:
                chosen[item.name] = settings_option(item, hints[item.name])

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(list(chosen.values())):
            func = option(func)
        return func

    return decorate


def _most_specific_first(cls: type) -> list[Field[Any]]:
    """``cls``'s fields, those a subclass declares before those it inherits."""
    by_name = {item.name: item for item in declared(cls)}
    ordered: dict[str, Field[Any]] = {}
    for klass in cls.__mro__:
        for name in vars(klass).get("__annotations__", {}):
            if name in by_name:
                ordered.setdefault(name, by_name[name])
    return list(ordered.values())


def given(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of ``cls`` set on the command line (None and empty mean unset), then those
    left unset that declare an environment variable, from the environment or ``.env`` in the
    working directory (flag > environment > ``.env`` > default)."""
    names = {item.name for item in declared(cls)}
    chosen = {
        name: value
        for name, value in values.items()
        if name in names and value is not None and value != ()
    }
    return chosen | from_environment(cls, set(chosen))
