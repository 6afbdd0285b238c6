from pathlib import Path

import pytest

from graph_distill.llm.settings import (
    DEFAULT_MODEL,
    ENV_NAMES,
    MIMO_BASE_URL,
    ConfigError,
    ModelSettings,
    is_mimo,
    require_usable,
    resolve_settings,
)

SOURCE_VALUES = {
    "api_key": ("flag-key", "env-key", "dotenv-key"),
    "base_url": ("http://flag.test/v1", "http://env.test/v1", "http://dotenv.test/v1"),
    "model": ("flag-model", "env-model", "dotenv-model"),
    "user_model": ("flag-user", "env-user", "dotenv-user"),
    "assistant_model": ("flag-assistant", "env-assistant", "dotenv-assistant"),
    "distill_model": ("flag-distill", "env-distill", "dotenv-distill"),
}
DEFAULTS = {
    "api_key": None,
    "base_url": MIMO_BASE_URL,
    "model": DEFAULT_MODEL,
    "user_model": None,
    "assistant_model": None,
    "distill_model": None,
}
ROLES = ("user", "assistant", "distill")


def write_dotenv(directory: Path, values: dict[str, str]) -> Path:
    lines = [f"{name}={value}" for name, value in values.items()]
    (directory / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return directory


@pytest.mark.parametrize("name", list(ENV_NAMES))
def test_flag_beats_env_beats_dotenv_beats_default(name: str, tmp_path: Path) -> None:
    flag, env, dotenv = SOURCE_VALUES[name]
    env_name = ENV_NAMES[name]
    write_dotenv(tmp_path, {env_name: dotenv})

    def resolved(flags: dict[str, str], environ: dict[str, str], cwd: Path) -> object:
        return getattr(resolve_settings(flags, environ=environ, cwd=cwd), name)

    assert resolved({name: flag}, {env_name: env}, tmp_path) == flag
    assert resolved({}, {env_name: env}, tmp_path) == env
    assert resolved({}, {}, tmp_path) == dotenv
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolved({}, {}, empty) == DEFAULTS[name]


@pytest.mark.parametrize("name", list(ENV_NAMES))
def test_empty_strings_count_as_unset(name: str, tmp_path: Path) -> None:
    _flag, _env, dotenv = SOURCE_VALUES[name]
    env_name = ENV_NAMES[name]
    write_dotenv(tmp_path, {env_name: dotenv})
    settings = resolve_settings({name: ""}, environ={env_name: "  "}, cwd=tmp_path)
    assert getattr(settings, name) == dotenv

    write_dotenv(tmp_path, {env_name: ""})
    settings = resolve_settings({name: ""}, environ={env_name: ""}, cwd=tmp_path)
    assert getattr(settings, name) == DEFAULTS[name]


def test_none_flags_fall_through(tmp_path: Path) -> None:
    flags = dict.fromkeys(ENV_NAMES)
    environ = {"MIMO_MODEL": "env-model", "MIMO_API_KEY": "env-key"}
    settings = resolve_settings(flags, environ=environ, cwd=tmp_path)
    assert settings.model == "env-model"
    assert settings.api_key == "env-key"


def test_values_are_stripped_and_trailing_slash_removed(tmp_path: Path) -> None:
    settings = resolve_settings(
        {"base_url": " http://127.0.0.1:8000/v1/ ", "model": " spaced "},
        environ={},
        cwd=tmp_path,
    )
    assert settings.base_url == "http://127.0.0.1:8000/v1"
    assert settings.model == "spaced"

    write_dotenv(tmp_path, {"MIMO_BASE_URL": "http://dotenv.test/v1/"})
    assert resolve_settings(environ={}, cwd=tmp_path).base_url == "http://dotenv.test/v1"


def test_dotenv_is_read_from_the_given_cwd_only(tmp_path: Path) -> None:
    write_dotenv(tmp_path, {"MIMO_MODEL": "outer-model"})
    inner = tmp_path / "inner"
    inner.mkdir()
    assert resolve_settings(environ={}, cwd=tmp_path).model == "outer-model"
    assert resolve_settings(environ={}, cwd=inner).model == DEFAULT_MODEL


def test_dotenv_defaults_to_the_process_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_dotenv(tmp_path, {"MIMO_MODEL": "cwd-model"})
    monkeypatch.chdir(tmp_path)
    assert resolve_settings(environ={}).model == "cwd-model"


def test_environ_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIMO_MODEL", "process-env-model")
    assert resolve_settings(cwd=tmp_path).model == "process-env-model"


def test_dotenv_key_without_value_is_unset(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MIMO_API_KEY\nMIMO_MODEL=m\n", encoding="utf-8")
    settings = resolve_settings(environ={}, cwd=tmp_path)
    assert settings.api_key is None
    assert settings.model == "m"


def test_all_defaults(tmp_path: Path) -> None:
    settings = resolve_settings(environ={}, cwd=tmp_path)
    assert settings == ModelSettings()
    assert settings.base_url_configured is False


@pytest.mark.parametrize("role", ROLES)
def test_model_for_role_falls_back_to_model(role: str, tmp_path: Path) -> None:
    plain = resolve_settings({"model": "shared"}, environ={}, cwd=tmp_path)
    assert plain.model_for(role) == "shared"
    override = resolve_settings(
        {"model": "shared"}, environ={ENV_NAMES[f"{role}_model"]: "special"}, cwd=tmp_path
    )
    assert override.model_for(role) == "special"
    others = [other for other in ROLES if other != role]
    assert all(override.model_for(other) == "shared" for other in others)


def test_wants_local_model_only_without_key_and_base_url(tmp_path: Path) -> None:
    assert resolve_settings(environ={}, cwd=tmp_path).wants_local_model is True

    configured = [
        resolve_settings({"api_key": "k"}, environ={}, cwd=tmp_path),
        resolve_settings({"base_url": "http://local.test/v1"}, environ={}, cwd=tmp_path),
        resolve_settings(environ={"MIMO_API_KEY": "k"}, cwd=tmp_path),
        resolve_settings(environ={"MIMO_BASE_URL": "http://local.test/v1"}, cwd=tmp_path),
    ]
    assert [settings.wants_local_model for settings in configured] == [False] * 4


def test_wants_local_model_is_false_with_mimo_base_url_configured(tmp_path: Path) -> None:
    settings = resolve_settings({"base_url": MIMO_BASE_URL}, environ={}, cwd=tmp_path)
    assert settings.base_url_configured is True
    assert settings.wants_local_model is False


@pytest.mark.parametrize("env_name", ["MIMO_API_KEY", "MIMO_BASE_URL"])
def test_wants_local_model_is_false_when_dotenv_configures(env_name: str, tmp_path: Path) -> None:
    write_dotenv(tmp_path, {env_name: "http://dotenv.test/v1"})
    assert resolve_settings(environ={}, cwd=tmp_path).wants_local_model is False


def test_other_settings_do_not_stop_the_local_model(tmp_path: Path) -> None:
    settings = resolve_settings(
        {"model": "m", "user_model": "u"}, environ={"MIMO_DISTILL_MODEL": "d"}, cwd=tmp_path
    )
    assert settings.wants_local_model is True


def test_require_usable_rejects_mimo_without_key(tmp_path: Path) -> None:
    settings = resolve_settings({"base_url": MIMO_BASE_URL}, environ={}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="MIMO_API_KEY") as caught:
        require_usable(settings)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in str(caught.value)


def test_require_usable_passes_mimo_with_key() -> None:
    settings = ModelSettings(api_key="sk-x")
    assert require_usable(settings) is settings


def test_require_usable_passes_custom_base_url_without_key(tmp_path: Path) -> None:
    settings = resolve_settings({"base_url": "http://127.0.0.1:9/v1"}, environ={}, cwd=tmp_path)
    assert require_usable(settings) is settings


def test_repr_hides_the_key() -> None:
    settings = ModelSettings(api_key="sk-secret", base_url="http://x.test/v1")
    assert "sk-secret" not in repr(settings)
    assert "sk-secret" not in str(settings)
    assert "http://x.test/v1" in repr(settings)


def test_settings_are_frozen() -> None:
    settings = ModelSettings(api_key="sk-secret")
    with pytest.raises(AttributeError):
        settings.api_key = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.xiaomimimo.com/v1", True),
        ("https://API.XiaomiMimo.com/v1/", True),
        ("https://api.xiaomimimo.com:443/v1", True),
        ("https://xiaomimimo.com/v1", True),
        ("https://xiaomimimo.com.evil.org/v1", False),
        ("https://api.xiaomimimo.com.evil.org/v1", False),
        ("https://evilxiaomimimo.com/v1", False),
        ("https://evil.org/api.xiaomimimo.com/v1", False),
        ("https://api.openai.com/v1", False),
        ("http://127.0.0.1:8000/v1", False),
        ("not a url", False),
        ("", False),
    ],
)
def test_is_mimo(url: str, expected: bool) -> None:
    assert is_mimo(url) is expected
