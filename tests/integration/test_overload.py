"""Overload sheds: a flood against a Renderer that queues at most one request gets quick 503s
with Retry-After (never a 500), changes nothing for the shed requests, and the service answers
normally afterwards."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
from soul_client import API_KEY, TEST_ARGS, Graph, burst, free_port

from serve_app.app import SHED_RETRY_AFTER_S
from serve_app.local import local_graph

pytestmark = pytest.mark.integration

CUES = ["castle", "rocket", "violin", "cactus", "glacier", "lantern", "volcano", "origami",
        "submarine", "windmill", "tornado", "pyramid"]  # fmt: skip


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Graph]:
    args = {
        **TEST_ARGS,
        "limits": {"Renderer": {"max_ongoing_requests": 1, "max_queued_requests": 1}},
    }
    env = {"SOUL_API_KEYS": json.dumps([API_KEY]), "SOUL_TORCH_THREADS": "1"}
    data_dir = tmp_path_factory.mktemp("overload")
    with local_graph(data_dir, port=free_port(), args=args, num_cpus=4, env=env) as url:
        graph = Graph(url, data_dir)
        yield graph
        graph.client.close()


def test_a_flood_sheds_with_503_and_the_service_recovers(tight: Graph) -> None:
    flood = [{"soul_id": "nova", "cue": cue, "user_id": f"f{i}"} for i, cue in enumerate(CUES)]
    responses = burst(tight, flood, concurrency=len(flood))
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, [r.text for r in responses if r.status_code >= 500]
    assert statuses[503] > 0 and statuses[200] > 0, statuses
    for shed in (r for r in responses if r.status_code == 503):
        assert shed.headers["Retry-After"] == str(SHED_RETRY_AFTER_S)
        assert "dropped due to backpressure" in shed.text

    # Only what was delivered is recorded: every claim is a 200, every variant has its GIF.
    delivered = {r.json()["variant_id"] for r in responses if r.status_code == 200}
    seen = {row["variant_id"] for row in tight.rows("SELECT variant_id FROM user_seen")}
    assert seen == delivered
    for row in tight.rows("SELECT storage_key FROM variant"):
        assert row["storage_key"] in tight.objects()

    after = tight.image("nova", "castle", "after-the-flood")
    assert after.status_code == 200, after.text
