"""The reserve over HTTP on the shared graph: a key a user asks for becomes hot, a refill (a
``reserve`` job, below every user's work) makes an unseen variant of it ahead of that user, and
the user's next request is a hit served from the reserve. The reserve's metrics are read as
before/after deltas. The reserve is off in the local config: this module turns it on live, with
a short half-life so demand left by earlier modules has cooled and the module's own key cools
soon after, and a second JobWorker slot (a refill never takes a replica's last free slot)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from shared_graph import SESSION_ARGS, souls_of
from soul_client import Graph, Sample, scrape_until, since, tenant, total

from serve_app.jobs.spec import RESERVE_CLIENT
from serve_app.metrics import METRICS

pytestmark = pytest.mark.integration

# Five requests make a key hot (5·60·ln2/20 = 10.4 a minute) for about a minute, long enough
# for a refill on a busy machine; one request of an earlier module's, a minute old, is cold.
EVERY_S = 0.5
RESERVE = {"enabled": True, "depth": 1, "hot_per_min": 1.0, "half_life_s": 20, "every_s": EVERY_S}
CUE = "a lighthouse at dusk"
GRAPH_ARGS = {"catalog": {"reserve": RESERVE}, "worker": {**SESSION_ARGS["worker"], "slots": 2}}
NOVA, _ = souls_of("refills")
WAIT_S = 120
COUNTED = ("soul_reserve_hits", "soul_reserve_refills", "soul_cache_requests")


def depth(samples: list[Sample], pk_id: str) -> float:
    """The reserve depth gauge of one key (-1: not exported yet)."""
    name = "ray_soul_reserve_depth"
    assert METRICS["soul_reserve_depth"].kind == "gauge"
    values = [value for n, labels, value in samples if n == name and labels.get("pk_id") == pk_id]
    return max(values, default=-1.0)


def variants_of(graph: Graph, pk_id: str) -> list[dict[str, Any]]:
    rows = graph.rows("SELECT variant_id, meta_json FROM variant WHERE pk_id = ?", pk_id)
    return [dict(r) for r in rows]


def unfinished_refills(graph: Graph) -> int:
    sql = "SELECT count(*) AS n FROM job WHERE client_id = ? AND finished_at_ts IS NULL"
    return int(graph.rows(sql, RESERVE_CLIENT)[0]["n"])


def until(check: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"still not: {what}"
        time.sleep(0.5)


def test_a_hot_key_is_refilled_and_its_user_gets_a_hit_from_the_reserve(graph: Graph) -> None:
    before = scrape_until(graph.metrics_url, lambda _: True, COUNTED)
    first = graph.image(NOVA, CUE, "keen").json()
    assert first["cache"] == "miss"
    pk_id = first["pk_id"]
    for user in ("u1", "u2", "u3", "u4"):  # each gets keen's variant: the key is hot
        assert graph.image(NOVA, CUE, user).json()["variant_id"] == first["variant_id"]

    # The key is hot and one variant short of being a variant ahead of "keen": one refill.
    until(lambda: len(variants_of(graph, pk_id)) == 2, "the key refilled")
    [made] = [v for v in variants_of(graph, pk_id) if v["variant_id"] != first["variant_id"]]
    assert json.loads(made["meta_json"])["reserve"] is True  # claimed by no one until asked
    assert not graph.rows("SELECT user_id FROM user_seen WHERE variant_id = ?", made["variant_id"])
    refilled = scrape_until(graph.metrics_url, lambda s: depth(s, pk_id) >= 1)  # a gauge
    assert depth(refilled, pk_id) >= 1  # one unseen variant ahead of the key's keenest user

    second = graph.image(NOVA, CUE, "keen").json()
    assert second["cache"] == "hit" and second["variant_id"] == made["variant_id"]
    seen = graph.rows("SELECT variant_id FROM user_seen WHERE user_id = ?", tenant("keen"))
    assert {r["variant_id"] for r in seen} == {first["variant_id"], made["variant_id"]}

    # While the key is hot, a refill keeps it a variant ahead of "keen" again; then it is
    # quiet, and no refill is left queued for the next module's idle worker.
    quiet(graph)
    made_now = len(variants_of(graph, pk_id)) - 1

    def counted(s: list[Sample]) -> bool:
        now = since(before, s)
        hits = total(now, "soul_reserve_hits", soul_id=NOVA)
        return hits >= 1 and total(now, "soul_reserve_refills", soul_id=NOVA) >= made_now

    samples = since(before, scrape_until(graph.metrics_url, counted, COUNTED))
    assert total(samples, "soul_reserve_hits", soul_id=NOVA) == 1
    assert total(samples, "soul_reserve_refills", soul_id=NOVA) == made_now >= 1
    assert total(samples, "soul_cache_requests", route="/image", soul_id=NOVA, result="hit") == 5


def quiet(graph: Graph) -> None:
    """No refill queued or running, twice in a row, after the planner has seen the last
    request (it plans every ``every_s``): a key without new requests plans nothing more."""
    for _ in range(2):
        time.sleep(3 * EVERY_S)
        until(lambda: unfinished_refills(graph) == 0, "the refills ended")
