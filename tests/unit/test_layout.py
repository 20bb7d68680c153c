"""The layout shows the architecture: the graph's boxes in deployments/, dependencies one way."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from fastapi.routing import APIRoute

from deployments.ingress import Ingress, api
from serve_app.api.routes import FAMILIES

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
    for family in FAMILIES:
        for route in family.router.routes:
            assert isinstance(route, APIRoute)
            endpoint = route.endpoint
            node = ast.parse(inspect.cleandoc("\n" + inspect.getsource(endpoint))).body[0]
            assert isinstance(node, ast.AsyncFunctionDef | ast.FunctionDef)
            body = node.body[1:] if ast.get_docstring(node) else node.body
            lines = body[-1].end_lineno - body[0].lineno + 1
            assert lines <= 15, f"{family.__name__}.{endpoint.__name__}: {lines} lines of body"


def test_every_route_belongs_to_exactly_one_route_family() -> None:
    modules = {p.stem for p in (ROOT / "serve_app/api/routes").glob("*.py")} - {"__init__"}
    assert modules == {family.__name__.rpartition(".")[2] for family in FAMILIES}
    owners: dict[tuple[str, str], list[str]] = {}
    for family in FAMILIES:
        for route in family.router.routes:
            assert isinstance(route, APIRoute), f"{family.__name__}: {route!r}"
            for method in route.methods:
                owners.setdefault((route.path_format, method.lower()), []).append(family.__name__)
    document = api.openapi()["paths"]
    operations = [(path, method) for path, ops in document.items() for method in ops]
    assert len(operations) > 30
    assert {op: owners.get(op, []) for op in operations if len(owners.get(op, [])) != 1} == {}


def test_the_ingress_only_composes_the_route_families() -> None:
    source = (ROOT / "deployments/ingress.py").read_text()
    assert len(source.splitlines()) <= 100
    # Its services, its live config, the app it serves: a route belongs to a family module.
    ingress = Ingress.func_or_class.__wrapped__  # our class, under Serve's ASGI wrapper
    methods = {name for name, member in vars(ingress).items() if inspect.isfunction(member)}
    assert methods == {"__init__", "reconfigure", "__serve_build_asgi_app__"}
