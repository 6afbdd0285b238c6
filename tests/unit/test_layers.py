"""The data path reads top to bottom: no module imports a layer above its own."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import graph_distill

PACKAGE = Path(graph_distill.__file__).parent
# Lower ranks may not import higher ones; equal ranks may not import each other.
RANKS = {
    "context": 0,
    "llm": 1,
    "files": 1,
    "conversation": 2,
    "distill": 2,
    "pipeline": 3,
    "run": 4,
    "report": 4,
    "export": 4.5,  # the dataset card uses the report's figures
    "cli": 5,
}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "graph_distill" else None


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def _violations() -> list[str]:
    bad: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0].removesuffix(".py")
        if own not in RANKS:
            continue
        for module in _imports(path):
            other = _stage(module)
            if other is None or other == own or other not in RANKS:
                continue
            if RANKS[other] >= RANKS[own]:
                bad.append(f"{relative} imports {module}")
    return bad


def test_every_module_belongs_to_a_stage() -> None:
    loose = [
        p.name
        for p in PACKAGE.iterdir()
        if p.suffix == ".py" and p.stem not in RANKS and p.stem not in {"__init__", "__main__"}
    ]
    folders = [
        p.name
        for p in PACKAGE.iterdir()
        if p.is_dir() and (p / "__init__.py").exists() and p.name not in RANKS
    ]
    assert loose == [] and folders == []


def test_no_import_goes_back_up_a_layer() -> None:
    assert _violations() == []


def test_the_check_catches_an_upward_import(tmp_path: Path, monkeypatch) -> None:
    fake = tmp_path / "graph_distill"
    (fake / "llm").mkdir(parents=True)
    (fake / "llm" / "bad.py").write_text("from graph_distill.run.runner import x\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert _violations() == ["llm/bad.py imports graph_distill.run.runner"]


# The model client's private third-party APIs live in its adapter alone.
MODEL_CLIENT_LIBRARIES = ("openai", "langchain_openai", "langchain_core", "httpx", "httpx2")
MODEL_ADAPTER = Path("llm/fast_client.py")


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] in MODEL_CLIENT_LIBRARIES and any(p.startswith("_") for p in parts):
                found.append(name)
    return found


def test_private_model_client_apis_are_imported_by_the_adapter_alone() -> None:
    outside = [
        f"{path.relative_to(PACKAGE)} imports {name}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.relative_to(PACKAGE) != MODEL_ADAPTER
        for name in _private_imports(path)
    ]
    assert outside == []
    assert _private_imports(PACKAGE / MODEL_ADAPTER)  # the check sees what it looks for
