"""The layout shows the architecture: the graph's boxes in deployments/, dependencies one way."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from fastapi.routing import APIRoute

from deployments.ingress import Ingress, api
from serve_app.api.routes import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
BOXES = {
    "ingress",
    "embedder",
    "catalog",
    "renderer",
    "animator",
    "dedupe",
    "transcoder",
    "upscaler",
    "worker",
}
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


def test_every_route_and_dependency_runs_on_the_event_loop() -> None:
    """FastAPI runs a plain ``def`` route or dependency on a worker thread: a thread hop per
    request for work that never waits (the profile of a cache hit showed it)."""

    def on_loop(call: object) -> bool:
        if inspect.isfunction(call):
            return inspect.iscoroutinefunction(call)
        return inspect.iscoroutinefunction(type(call).__call__)  # an instance: HTTPBearer

    threaded: set[str] = set()

    def walk(dependant: object) -> None:
        for sub in getattr(dependant, "dependencies", []):
            if sub.call is not None and not on_loop(sub.call):
                threaded.add(getattr(sub.call, "__qualname__", repr(sub.call)))
            walk(sub)

    for family in FAMILIES:
        for route in family.router.routes:
            assert isinstance(route, APIRoute)
            if not on_loop(route.endpoint):
                threaded.add(route.endpoint.__qualname__)
            walk(route.dependant)
    assert not threaded, f"run on a worker thread per request: {sorted(threaded)}"


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


# ---- sizes, cycles and the code map -----------------------------------------------------------
PACKAGES = ("serve_app", "deployments")
MAX_MODULE_LINES = 400
MAX_CLASS_LINES = 250
# Modules and classes allowed past those sizes, each with its reason.
LARGE: dict[str, str] = {}


def python_modules() -> dict[str, Path]:
    """Dotted name → file, for every module of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def runtime_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project's modules ``path`` imports when it runs, inside functions too (lazy
    imports), but not under ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for statement in node.body
        for child in ast.walk(statement)
    }
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *filter(None, [base])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = [stack.pop()]
            while group[-1] != node:
                group.append(stack.pop())
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_no_import_cycles_lazy_imports_included() -> None:
    modules = python_modules()
    graph = {name: runtime_imports(name, path, modules) for name, path in modules.items()}
    cycles = [group for group in strongly_connected(graph) if len(group) > 1]
    assert not cycles, f"modules that import each other: {cycles}"


def test_no_module_or_class_is_a_hub() -> None:
    too_large = []
    for name, path in python_modules().items():
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES and name not in LARGE:
            too_large.append(f"{name}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.ClassDef) or f"{name}.{node.name}" in LARGE:
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_CLASS_LINES:
                too_large.append(f"{name}.{node.name}: {lines} lines")
    assert not too_large, f"past {MAX_MODULE_LINES} lines a module or {MAX_CLASS_LINES} a class"


def test_the_code_map_names_every_package_and_module() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    code_map = doc.split("## Where the code lives", 1)[1].split("\n## ", 1)[0]
    missing = []
    for name, path in python_modules().items():
        shown = f"{path.parent.name}/" if path.name == "__init__.py" else path.name
        if shown not in code_map:
            missing.append(name)
    assert not missing, f"docs/architecture.md's code map does not name {missing}"


def test_delivery_passes_values_not_long_argument_lists() -> None:
    # The values that travel through every step are one object (delivery/order.py).
    for path in (ROOT / "serve_app" / "delivery").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                arguments = node.args
                count = len(arguments.posonlyargs + arguments.args + arguments.kwonlyargs)
                assert count <= 6, f"{path.name}:{node.name} takes {count} parameters"


def test_no_two_test_modules_share_a_name() -> None:
    """pytest imports test modules by basename (no __init__.py): two of one name cannot be
    collected in one run."""
    names = [path.name for path in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
