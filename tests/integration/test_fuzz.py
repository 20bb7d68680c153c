"""Schemathesis over every route of a running graph, every check on (`tests/fuzz/`): the
schema-valid requests it makes are answered without a 5xx and as documented, the invalid ones
are refused with a documented 4xx. ``SOUL_FUZZ_EXAMPLES`` sets the examples per operation and
phase (`make fuzz` runs more, with a fresh seed)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from shared_graph import FUZZ_KEY
from soul_client import Graph

from tests.support import FakeCivitai

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("SOUL_FUZZ_EXAMPLES", "40"))
SEED = os.environ.get("SOUL_FUZZ_SEED", "20261202")  # fixed in CI: a failure replays as is


@pytest.fixture(autouse=True)
def civitai_offline(civitai: FakeCivitai) -> Iterator[None]:
    """The fuzzed graph has no outside world (`schemathesis.toml`): a CivitAI ref answers 502,
    as an unreachable CivitAI makes it, not the 404 (422) of the session's fake for a version it
    does not know."""
    civitai.offline = True
    yield
    civitai.offline = False


@pytest.fixture(autouse=True)
def styles_put_back(graph: Graph) -> Iterator[None]:
    """The fuzzer, an admin, follows GET /style's soul ids to DELETE and POST /style: every
    soul's style is put back afterwards, for the modules that share the graph."""
    souls = [style["soul_id"] for style in graph.client.get("/style").json()]
    styles = [graph.client.get(f"/style/{soul_id}").json() for soul_id in souls]
    yield
    for style in styles:
        style.pop("updated_at_ts")
        restored = graph.client.post("/style", json=style)
        assert restored.status_code == 200, restored.text


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
        # One worker: Hypothesis parses lambdas' source with ast.parse, and CPython 3.11's AST
        # recursion counter is not thread-safe ("AST constructor recursion depth mismatch").
        "--workers", "1",
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
            "SOUL_FUZZ_API_KEY": FUZZ_KEY,  # an admin key: the /admin routes are fuzzed for real
            "SOUL_FUZZ_STATUSES": str(statuses),
        },
    )
    summary = run.stdout[run.stdout.rfind("SUMMARY") :]
    print(summary, "statuses answered:", statuses.read_text() if statuses.exists() else "none")
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-5000:]
    cases = re.search(r"(\d+) generated,", summary)
    assert cases is not None and int(cases.group(1)) >= 1000, summary
