"""Overload sheds: a flood against a Renderer that queues at most one request gets quick 503s
with Retry-After (never a 500), changes nothing for the shed requests, and the service answers
normally afterwards."""

from __future__ import annotations

from collections import Counter

import pytest
from shared_graph import souls_of
from soul_client import Graph, burst

from serve_app.app import SHED_RETRY_AFTER_S

pytestmark = pytest.mark.integration

NOVA, _ = souls_of("overload")
CUES = ["castle", "rocket", "violin", "cactus", "glacier", "lantern", "volcano", "origami",
        "submarine", "windmill", "tornado", "pyramid"]  # fmt: skip
# A Renderer that queues at most one request; applied live, and lifted after the module.
GRAPH_LIMITS = {"Renderer": {"max_ongoing_requests": 1, "max_queued_requests": 1}}


@pytest.fixture(scope="module")
def tight(graph: Graph) -> Graph:
    return graph


def test_a_flood_sheds_with_503_and_the_service_recovers(tight: Graph) -> None:
    flood = [{"soul_id": NOVA, "cue": cue, "user_id": f"f{i}"} for i, cue in enumerate(CUES)]
    responses = burst(tight, flood, concurrency=len(flood))
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 503}, [r.text for r in responses if r.status_code >= 500]
    assert statuses[503] > 0 and statuses[200] > 0, statuses
    for shed in (r for r in responses if r.status_code == 503):
        assert shed.headers["Retry-After"] == str(SHED_RETRY_AFTER_S)
        assert "dropped due to backpressure" in shed.text

    # Only what was delivered is recorded: every claim is a 200, every variant has its GIF.
    delivered = {r.json()["variant_id"] for r in responses if r.status_code == 200}
    seen_rows = tight.rows("SELECT variant_id FROM user_seen WHERE pk_id LIKE ?", f"{NOVA}:%")
    seen = {row["variant_id"] for row in seen_rows}
    assert seen == delivered
    for row in tight.rows("SELECT storage_key FROM variant WHERE soul_id = ?", NOVA):
        assert row["storage_key"] in tight.objects()

    after = tight.image(NOVA, "castle", "after-the-flood")
    assert after.status_code == 200, after.text
