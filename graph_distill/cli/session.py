"""The model a command talks to: the configured server, or the embedded local model, whose
server this starts (and always stops) when needed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import click

from graph_distill.context import ModelContext
from graph_distill.llm.local_model import LocalModelServer
from graph_distill.llm.settings import (
    MODEL_SETTINGS,
    ModelSettings,
    require_usable,
    resolve_settings,
)

# The embedded model's context is small: keep prompts and replies within it. Its server
# answers one request at a time, so requests queue: give them time.
LOCAL_LIMITS = {
    "request_timeout": 900.0,
    "history_budget_tokens": 2500,
    "max_output_tokens": 300,
    "distill_max_output_tokens": 600,
    "notes_budget_tokens": 1500,
}
ContextT = TypeVar("ContextT", bound=ModelContext)


@contextmanager
def model_session(
    ctx: ContextT, local_model: Path | None, quiet: bool
) -> Iterator[tuple[ContextT, ModelSettings, bool]]:
    """``ctx`` with the model settings resolved (flags, environment, ``.env``, once), the
    settings, and whether they point at the embedded model."""
    settings = resolve_settings({name: getattr(ctx, name, None) for name in _model_fields(ctx)})
    if local_model is None and not settings.wants_local_model:
        settings = require_usable(settings)
        yield _with_settings(ctx, settings, {}), settings, False
        return
    server = LocalModelServer(local_model)
    with server:
        base_url = server.start()
        if not quiet:
            click.echo(
                f"No API key or base URL set: using the embedded local model "
                f"{server.model_name} at {base_url}",
                err=True,
            )
        local = replace(
            settings,
            base_url=base_url,
            api_key=None,
            model=server.model_name,
            user_model=None,
            assistant_model=None,
            distill_model=None,
            base_url_configured=True,
        )
        yield _with_settings(ctx, local, LOCAL_LIMITS), local, True


def _model_fields(ctx: ModelContext) -> list[str]:
    return [name for name in MODEL_SETTINGS if hasattr(ctx, name)]


def _with_settings(ctx: ContextT, settings: ModelSettings, limits: dict[str, Any]) -> ContextT:
    values = {name: getattr(settings, name) for name in _model_fields(ctx)}
    known = {name: value for name, value in limits.items() if hasattr(ctx, name)}
    return replace(ctx, **values, **known)
