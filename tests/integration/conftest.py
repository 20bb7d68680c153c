"""One local Ray and one running graph for the whole test session, spoken to over HTTP.

Each module gets the ``graph`` fixture: the session's graph with the module's own settings
applied live (module attributes ``GRAPH_ARGS``, sections as in ``build_app``'s args, and
``GRAPH_LIMITS``, request limits by deployment) and restored afterwards. Modules marked ``slow``
start what they test themselves (PostgreSQL, `soul serve`, the notebooks): they run last, after
the shared graph has stopped, or beside it in the other pytest worker under `make test`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from shared_graph import SharedGraph, shared_graph
from soul_client import Graph

from serve_app.diffusion.tiny import build_tiny_models
from tests.support import FakeCivitai

IDLE_TIMEOUT_S = 300
SLOW_RENDERER = {"steps": 24, "width": 96, "height": 96}  # seconds a render on 2 busy cores


@dataclass
class Node:
    graph: SharedGraph
    url: str
    metrics_url: str


class SessionGraph:
    """Starts the shared graph on first use; ``stop`` ends it before a module starts its own."""

    def __init__(self, factory: pytest.TempPathFactory, models: Path, civitai: FakeCivitai):
        self.factory, self.models, self.civitai = factory, models, civitai
        self.stack = ExitStack()
        self.node: Node | None = None

    def get(self) -> Node:
        if self.node is None:
            data_dir = self.factory.mktemp("shared")
            started = shared_graph(data_dir, self.models, self.civitai)
            self.node = Node(*self.stack.enter_context(started))
        return self.node

    def stop(self) -> None:
        self.stack.close()
        self.node = None


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny models, built once per session; each graph's data folder links to them."""
    models = tmp_path_factory.mktemp("models")
    build_tiny_models(models)
    return models


@pytest.fixture(scope="session")
def civitai() -> Iterator[FakeCivitai]:
    fake = FakeCivitai()
    yield fake
    fake.close()


@pytest.fixture(scope="session")
def session_graph(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: Path, civitai: FakeCivitai
) -> Iterator[SessionGraph]:
    running = SessionGraph(tmp_path_factory, tiny_models, civitai)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def graph(request: pytest.FixtureRequest, session_graph: SessionGraph) -> Iterator[Graph]:
    node = session_graph.get()
    args = getattr(request.module, "GRAPH_ARGS", None)
    limits = getattr(request.module, "GRAPH_LIMITS", None)
    with node.graph.configured(args, limits):
        graph = Graph(node.url, node.graph.data_dir, metrics_url=node.metrics_url)
        yield graph
        wait_for_jobs(graph)  # the next module starts on an idle worker
        graph.client.close()


@pytest.fixture
def slow_renders(request: pytest.FixtureRequest, session_graph: SessionGraph) -> Iterator[None]:
    """For one test of a module on the session's quick renders: renders slow enough to watch
    or queue behind (``SLOW_RENDERER``), applied live and restored after it."""
    assert not getattr(request.module, "GRAPH_ARGS", None), "the module sets its own renderer"
    with session_graph.get().graph.configured({"renderer": SLOW_RENDERER}):
        yield


@pytest.fixture(scope="module")
def own_ray(session_graph: SessionGraph) -> None:
    """For a module that starts a Ray of its own: the shared graph is stopped first."""
    session_graph.stop()


def wait_for_jobs(graph: Graph) -> None:
    deadline = time.monotonic() + IDLE_TIMEOUT_S
    unfinished = "SELECT count(*) AS n FROM job WHERE finished_at_ts IS NULL"
    while graph.rows(unfinished)[0]["n"] and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the groups marked here
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here starts Ray: it must say so, so `-m "not integration"` leaves it out.
    The unit tests run first (the shared graph's environment, set in this process for as long
    as it runs, is not theirs), then the modules on the shared graph, then the slow modules,
    which start their own."""
    unmarked = [
        item.nodeid
        for item in items
        if "tests/integration/" in item.nodeid and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"integration tests without the integration marker: {unmarked}")
    items.sort(
        key=lambda item: (
            item.get_closest_marker("integration") is not None,
            item.get_closest_marker("slow") is not None,
        )
    )
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_process_group(item)))


def pytest_collection_finish(session: pytest.Session) -> None:
    """A pytest that xdist does not fit drops the groups silently (pytest 9.2 with xdist 3.8):
    then both workers start Rays of their own at once, and one stops PostgreSQL under the other."""
    if getattr(session.config.option, "loadgroup", False):
        lost = [item.nodeid for item in session.items if "@" not in item.nodeid]
        if lost:
            raise pytest.UsageError(f"xdist lost the test groups of {len(lost)} tests: {lost[:3]}")


def _process_group(item: pytest.Item) -> str:
    """Under `pytest -n 2 --dist loadgroup` (`make test`) each group runs in one worker, in the
    order above: the unit tests in one, the modules on the shared graph in the other, and the
    modules with a Ray of their own in whichever is free first: the unit tests' (they are done
    by then, long before `test_postgres.py` stops the server; the shared graph's store is
    SQLite). The unit tests never see the shared graph's environment."""
    if item.get_closest_marker("integration") is None:
        return "unit"
    return "own-ray" if item.get_closest_marker("slow") else "shared-graph"
