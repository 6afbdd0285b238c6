"""The options of a run on an Agent Server (``--server``): checked here, before any request,
and turned into what run/remote.py is given."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graph_distill.context import DistillContext, PipelineContext, declared
from graph_distill.llm.settings import MIMO_BASE_URL, MODEL_SETTINGS
from graph_distill.run.driver import RunPlan
from graph_distill.run.ledger import Prices, default_prices, prices_with
from graph_distill.run.remote import RemoteDistill, RemoteRun, Server, ServerError
from graph_distill.run.settings import RunSettings

# Paced by the server, not here (--rpm is refused with --server).
SERVER_PACED = ("requests_per_minute",)


def server_options(
    context_type: type[DistillContext], run_settings: RunSettings, values: dict[str, Any]
) -> tuple[Server, dict[str, Any], dict[str, Any], dict[str, float | None]]:
    """The server, the graph settings and the model settings given on the command line (the
    only ones sent: the server's environment holds the rest, the key always), and the prices."""
    typed = {k: v for k, v in values.items() if v is not None and v != ()}
    names = {item.name for item in declared(context_type)}
    model = {name: typed.get(name) for name in MODEL_SETTINGS if name in names}
    model["local_model"] = run_settings.local_model
    graph = {
        k: v for k, v in typed.items() if k in names and k not in model and k not in SERVER_PACED
    }
    server = server_from_options(
        run_settings.server,
        run_settings.server_api_key,
        model,
        typed.get("requests_per_minute"),
        stall_timeout=run_settings.server_stall_timeout,
    )
    assert server is not None
    prices = {
        "input": run_settings.price_input,
        "cached_input": run_settings.price_cached,
        "output": run_settings.price_output,
    }
    return server, graph, model, prices


def server_from_options(
    url: str | None,
    api_key: str | None,
    model_flags: Mapping[str, Any],
    rpm: float | None,
    *,
    stall_timeout: float | None = None,
) -> Server | None:
    """The server of ``--server`` (None: work here); ServerError for options that only a
    local run can honour."""
    if not url:
        return None
    if not url.startswith(("http://", "https://")):
        raise ServerError(f"--server {url}: give the server's http:// or https:// URL")
    if rpm is not None:
        raise ServerError(
            "--rpm cannot pace a run on --server: limit requests on the server "
            "(its jobs per worker and the model provider's limits)"
        )
    for name, option in (("api_key", "--api-key"), ("local_model", "--local-model")):
        if model_flags.get(name):
            raise ServerError(
                f"{option} cannot be used with --server: the server's environment holds the "
                "model key and settings"
            )
    return Server(url.rstrip("/"), api_key or None, stall_timeout)


def given_settings(model_flags: Mapping[str, Any]) -> tuple[str, ...]:
    """The model settings given on the command line: the only ones sent to the server."""
    return tuple(
        name
        for name, value in model_flags.items()
        if name not in ("api_key", "local_model") and value
    )


def remote_run(
    server: Server,
    plan: RunPlan,
    graph_settings: Mapping[str, Any],
    model_flags: Mapping[str, Any],
    price_flags: Mapping[str, float | None],
) -> RemoteRun:
    """``plan`` to be done on ``server``, priced with the --price-* flags."""
    ctx, given = _server_settings(graph_settings, model_flags)
    plan.prices = _server_prices(ctx, price_flags)
    return RemoteRun(server=server, plan=plan, ctx=ctx, given=given)


def remote_distill(
    server: Server,
    split_settings: Mapping[str, Any],
    model_flags: Mapping[str, Any],
    price_flags: Mapping[str, float | None],
    *,
    concurrency: int,
    force: bool,
) -> RemoteDistill:
    ctx, given = _server_settings(split_settings, model_flags)
    return RemoteDistill(
        server=server,
        ctx=ctx,
        given=given,
        concurrency=concurrency,
        force=force,
        prices=_server_prices(ctx, price_flags),
    )


def _server_settings(
    values: Mapping[str, Any], model_flags: Mapping[str, Any]
) -> tuple[PipelineContext, tuple[str, ...]]:
    given = given_settings(model_flags)
    return PipelineContext(**values, **{name: model_flags[name] for name in given}), given


def _server_prices(ctx: PipelineContext, price_flags: Mapping[str, float | None]) -> Prices:
    """The --price-* flags over the defaults for the model server the runs call: the
    --base-url sent, else MiMo (the default a server configured like this project's uses)."""
    base_url = ctx.base_url or MIMO_BASE_URL
    return prices_with(**price_flags, defaults=default_prices(base_url, local=False))
