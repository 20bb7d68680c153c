"""Schemathesis over every route of a running graph, every check on (`tests/fuzz/`): the
schema-valid requests it makes are answered without a 5xx and as documented, the invalid ones
are refused with a documented 4xx. ``SOUL_FUZZ_EXAMPLES`` sets the examples per operation and
phase (`make fuzz` runs more, with a fresh seed)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from soul_client import API_KEY, TEST_ARGS, Graph, free_port

from serve_app.local import local_graph

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("SOUL_FUZZ_EXAMPLES", "40"))
SEED = os.environ.get("SOUL_FUZZ_SEED", "20261202")  # fixed in CI: a failure replays as is


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Graph]:
    env = {
        "SOUL_API_KEYS": json.dumps([API_KEY]),
        "SOUL_ADMIN_KEYS": json.dumps([API_KEY]),  # the /admin routes are fuzzed for real too
        "SOUL_TORCH_THREADS": "1",
        # Job webhooks go to whatever host the fuzzer names: resolving them at submit would
        # refuse most (this machine has no DNS), so they are tried, and fail, at delivery.
        "SOUL_WEBHOOK_ALLOW_PRIVATE_HOSTS": "true",
        # The same for reference URLs ("http://0" is 0.0.0.0): fetched, and unreachable (502).
        "SOUL_REFERENCE_ALLOW_PRIVATE_HOSTS": "true",
    }
    data_dir = tmp_path_factory.mktemp("soul")
    with local_graph(data_dir, port=free_port(), args=TEST_ARGS, env=env, quiet=True) as url:
        graph = Graph(url, data_dir)
        yield graph
        graph.client.close()


def test_schemathesis_finds_no_failure_on_any_route(graph: Graph, tmp_path: Path) -> None:
    report, statuses = tmp_path / "report.xml", tmp_path / "statuses.json"
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "--config-file", str(ROOT / "tests" / "fuzz" / "schemathesis.toml"),
        "run", f"{graph.base_url}/openapi.json",
        "--checks", "all",
        "--max-response-time", "120",  # a miss on 2 busy cores takes seconds
        "--max-examples", str(EXAMPLES),
        "--seed", SEED,
        "--workers", "2",
        "--generation-database", "none",
        "--report", "junit", "--report-junit-path", str(report),
        "--no-color",
    ]  # fmt: skip
    run = subprocess.run(
        command,
        cwd=tmp_path,  # its .schemathesis folder stays out of the repository
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SOUL_FUZZ_API_KEY": API_KEY,
            "SOUL_FUZZ_STATUSES": str(statuses),
        },
    )
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    print(summary, "statuses answered:", statuses.read_text() if statuses.exists() else "none")
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    cases = re.search(r"(\d+) generated,", summary)
    assert cases is not None and int(cases.group(1)) >= 1000, summary
