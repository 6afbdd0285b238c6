"""Model settings: flag > environment > ``.env`` in the working directory > default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from graph_distill.context import PipelineContext, declared, from_environment

MIMO_BASE_URL = "https://api.xiaomimimo.com/v1"
DEFAULT_MODEL = "mimo-v2-flash"
# Each model setting's environment variable, as the context declares it (text settings: the
# switches, such as GRAPH_DISTILL_STOCK, choose a path, not a server or model).
ENV_NAMES = {
    item.name: item.metadata["env"]
    for item in declared(PipelineContext)
    if item.metadata.get("env") and not isinstance(item.default, bool)
}
# Which server and models to call: the settings the environment may set.
MODEL_SETTINGS = tuple(ENV_NAMES)
# Servers that need no key still get one: the openai client refuses to start without it.
KEYLESS_PLACEHOLDER = "not-needed"


class ConfigError(ValueError):
    """A setting is missing or wrong; the message is one plain line for the user."""


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """Where and which models to call. ``api_key`` never appears in repr or output."""

    api_key: str | None = field(default=None, repr=False)
    base_url: str = MIMO_BASE_URL
    model: str = DEFAULT_MODEL
    user_model: str | None = None
    assistant_model: str | None = None
    distill_model: str | None = None
    base_url_configured: bool = False

    @property
    def wants_local_model(self) -> bool:
        """No key and no base URL anywhere: the embedded local model serves."""
        return not self.api_key and not self.base_url_configured

    def model_for(self, role: str) -> str:
        return getattr(self, f"{role}_model", None) or self.model


def is_mimo(base_url: str) -> bool:
    host = urlparse(base_url).hostname or ""
    return host == "xiaomimimo.com" or host.endswith(".xiaomimimo.com")


def resolve_settings(
    flags: Mapping[str, str | None] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ModelSettings:
    """Merge the sources, highest first; empty strings count as unset."""
    chosen = {
        name: value.strip() for name, value in (flags or {}).items() if value and value.strip()
    }
    values = chosen | from_environment(PipelineContext, set(chosen), environ, cwd)

    def pick(name: str) -> str | None:
        return values.get(name)

    base_url = pick("base_url")
    return ModelSettings(
        api_key=pick("api_key"),
        base_url=(base_url or MIMO_BASE_URL).rstrip("/"),
        model=pick("model") or DEFAULT_MODEL,
        user_model=pick("user_model"),
        assistant_model=pick("assistant_model"),
        distill_model=pick("distill_model"),
        base_url_configured=base_url is not None,
    )


def require_usable(settings: ModelSettings) -> ModelSettings:
    """Fail early, in plain words, on settings that cannot work against a remote server."""
    if not settings.api_key and is_mimo(settings.base_url):
        raise ConfigError(
            f"No API key for {settings.base_url}: set MIMO_API_KEY (or pass --api-key)."
        )
    return settings
