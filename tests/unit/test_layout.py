"""The layout shows the architecture: the graph's boxes in deployments/, dependencies one way."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from deployments.ingress import Ingress

ROOT = Path(__file__).resolve().parents[2]
BOXES = {"ingress", "embedder", "catalog", "renderer", "animator", "dedupe", "transcoder", "worker"}
# Modules that start or assemble the graph, and so may name its deployments.
COMPOSITION_ROOTS = {"serve_app/app.py", "serve_app/cli.py", "serve_app/local.py"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_deployments_holds_exactly_the_graphs_boxes() -> None:
    modules = {p.stem for p in (ROOT / "deployments").glob("*.py")} - {"__init__"}
    assert modules == BOXES


def test_deployments_never_import_each_other() -> None:
    for path in (ROOT / "deployments").glob("*.py"):
        others = {m for m in imported_modules(path) if m.startswith("deployments")}
        assert not others, f"{path.name} imports {others}"


def test_only_composition_roots_and_benchmarks_import_deployments() -> None:
    for path in (ROOT / "serve_app").rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        if relative in COMPOSITION_ROOTS or relative.startswith("serve_app/bench/"):
            continue
        wrong = {m for m in imported_modules(path) if m.startswith("deployments")}
        assert not wrong, f"{relative} imports {wrong}"


def test_pipeline_code_never_speaks_http() -> None:
    http = ("fastapi", "starlette")
    for path in (ROOT / "serve_app").rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        # the bench's floor is a no-op FastAPI ingress: HTTP is what it measures
        if relative.startswith("serve_app/api/") or relative == "serve_app/bench/floor.py":
            continue
        found = {m for m in imported_modules(path) if m.startswith(http)}
        assert not found, f"{relative} imports {found}"


def test_ingress_routes_only_translate_http() -> None:
    deployed = Ingress.func_or_class
    for name, method in vars(deployed).items():
        if not inspect.isfunction(method) or name.startswith("__"):
            continue
        node = ast.parse(inspect.cleandoc("\n" + inspect.getsource(method))).body[0]
        assert isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
        body = node.body[1:] if ast.get_docstring(node) else node.body
        lines = body[-1].end_lineno - body[0].lineno + 1
        assert lines <= 15, f"Ingress.{name}: {lines} lines of body"
