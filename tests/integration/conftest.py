"""One local Ray cluster and one running graph per test module, spoken to over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from soul_client import API_KEY, TEST_ARGS, Graph, free_port

from serve_app.local import local_graph
from tests.support import FakeCivitai


@pytest.fixture(scope="module")
def civitai() -> Iterator[FakeCivitai]:
    fake = FakeCivitai()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory, civitai: FakeCivitai) -> Iterator[Graph]:
    data_dir = tmp_path_factory.mktemp("soul")
    env = {
        "SOUL_API_KEYS": json.dumps([API_KEY]),
        "SOUL_TORCH_THREADS": "1",
        "SOUL_CIVITAI_URL": civitai.url,
        "SOUL_CIVITAI_TOKEN": FakeCivitai.TOKEN,
        "SOUL_REFERENCE_ALLOW_PRIVATE_HOSTS": "true",  # the tests serve references on 127.0.0.1
    }
    with local_graph(data_dir, port=free_port(), args=TEST_ARGS, num_cpus=4, env=env) as url:
        graph = Graph(url, data_dir)
        yield graph
        graph.client.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here starts Ray: it must say so, so `-m "not integration"` leaves it out."""
    unmarked = [
        item.nodeid
        for item in items
        if "tests/integration/" in item.nodeid and item.get_closest_marker("integration") is None
    ]
    if unmarked:
        raise pytest.UsageError(f"integration tests without the integration marker: {unmarked}")
