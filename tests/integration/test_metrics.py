"""After a few requests, the node's Ray metrics endpoint shows each of our metrics with its tags,
and every delivery leaves one structured log line under the request id the response returned."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from shared_graph import souls_of
from soul_client import TEST_ARGS, Graph, Sample, burst, scrape, scrape_until, since, total

from deployments.ingress import IngressConfig
from serve_app.metrics import METRICS

pytestmark = pytest.mark.integration


# Threshold 64: every sibling counts as too close, so a key's second variant has rejects
# (pHash's: it is asked first). The tiny CLIP embeds every render too.
# A Renderer that waits up to half a second to fill a batch: concurrent misses reach it spread
# out on a loaded machine (two graphs run at once under `make test`).
GRAPH_ARGS = {
    "dedupe": {"threshold": 64, "clip_model": "tiny-clip", "clip_distance": 0.012},
    "renderer": {**TEST_ARGS["renderer"], "batch_wait_s": 0.5},
}
NOVA, VALENTINA = souls_of("metrics")
COUNTS = tuple(METRICS)  # the check below reads every metric of ours


@dataclass
class Observed:
    graph: Graph
    logs_dir: Path


@pytest.fixture(scope="module")
def observed(graph: Graph) -> Observed:
    """The shared graph: metrics on its node's port, JSON logs in its data folder."""
    return Observed(graph, graph.data_dir / "logs")


def test_each_metric_is_exported_with_its_tags(observed: Observed) -> None:
    graph = observed.graph
    before = scrape_until(graph.metrics_url, lambda _: True, COUNTS)  # its counts are deltas
    assert graph.image(NOVA, "penguin", "u1").json()["cache"] == "miss"
    assert graph.image(NOVA, "penguin", "u2").json()["cache"] == "hit"
    assert graph.image(NOVA, "penguin", "u1").json()["cache"] == "miss"  # a sibling: rejects
    assert graph.image(VALENTINA, "penguin", "u1").json()["cache"] == "miss"  # AnimateDiff
    together = burst(
        graph, [{"soul_id": NOVA, "cue": "comet", "user_id": f"c{i}"} for i in range(4)]
    )
    assert [r.status_code for r in together] == [200] * 4
    selfie = {"soul_id": NOVA, "city_key": "paris", "mood": "happy", "user_id": "u1"}
    assert graph.client.post("/selfie", json=selfie).status_code == 200
    job = {"kind": "image", "soul_id": NOVA, "cue": "penguin", "user_id": "u3"}  # a hit
    job_id = graph.client.post("/jobs", json=job).json()["job_id"]
    while graph.client.get(f"/jobs/{job_id}").json()["status"] != "succeeded":
        time.sleep(0.1)

    expected: dict[str, list[dict[str, str]]] = {
        "soul_cache_requests": [
            {"route": "/image", "soul_id": NOVA, "result": "miss"},
            {"route": "/image", "soul_id": NOVA, "result": "hit"},
            {"route": "/image", "soul_id": VALENTINA, "result": "miss"},
            {"route": "/selfie", "soul_id": NOVA, "result": "miss"},
            {"route": "/jobs", "soul_id": NOVA, "result": "hit"},
        ],
        "soul_coalesced_requests": [{"scope": "replica"}],
        "soul_dedupe_rejects": [{"deployment": "Dedupe", "filter": "phash"}],
        "soul_render_ms": [{"source": "text", "deployment": "Renderer"}],
        "soul_animate_ms": [{"mode": "subtle"}, {"mode": "animated"}],
        "soul_dedupe_ms": [{"deployment": "Dedupe", "filter": f} for f in ("phash", "clip")],
        "soul_transcode_ms": [{"deployment": "Transcoder"}],
        "soul_store_ms": [{"backend": "local", "deployment": "Transcoder"}],
        "soul_gif_bytes": [{"deployment": "Transcoder"}],
        "soul_jobs": [{"kind": "image", "status": "succeeded", "deployment": "JobWorker"}],
        "soul_job_wait_ms": [{"kind": "image", "deployment": "JobWorker"}],
        "soul_job_run_ms": [{"kind": "image", "deployment": "JobWorker"}],
        "soul_job_queue_depth": [{"priority": "high"}, {"priority": "normal"}],  # a gauge: 0
        "soul_key_index_keys": [{"soul_id": NOVA, "index": "exact", "deployment": "Catalog"}],
        "soul_cost_usd": [
            {"soul_id": soul, "stage": stage, "deployment": "Catalog"}
            for soul in (NOVA, VALENTINA)
            for stage in ("render", "animate", "encode")
        ],
        "soul_cost_today_usd": [{"deployment": "Catalog"}],
        "soul_cost_budget_warning": [{"deployment": "Catalog"}],  # no budget: 0
    }
    # Claim races need concurrent claims that interleave: test_postgres.py provokes them. Job
    # retries and dead letters need failing jobs: test_job_worker.py runs those paths.
    # The sweeper runs every sweep_every_s (minutes): test_catalog.py runs it. Identity verdicts
    # need a soul with a locked identity: test_characters.py delivers such variants on this graph
    # and test_identity_answers.py counts them. The reserve is off in the local config:
    # test_refills.py turns it on and observes its depth, refills and hits on this graph;
    # test_reserve.py runs refills, preemption and the budget's stop over the real engines.
    unobserved = {"soul_claim_races", "soul_job_retries", "soul_job_dead_letters",
                  "soul_swept_rows", "soul_identity_verdicts", "soul_identity_score",
                  "soul_reserve_depth", "soul_reserve_refills", "soul_reserve_preempted",
                  "soul_reserve_hits", "soul_reserve_budget_stops"}  # fmt: skip
    assert set(expected) == set(METRICS) - unobserved

    # Every scrape while waiting: a replica re-exports its gauges each second and Ray keeps one
    # for two seconds, so on a loaded machine a late export leaves a gauge out of one scrape.
    scraped: list[Sample] = []

    def there(samples: list[Sample], name: str, tags: dict[str, str]) -> bool:
        if METRICS[name].kind == "gauge":
            series = [*scraped, *samples]
            return any(n == f"ray_{name}" and tags.items() <= t.items() for n, t, _ in series)
        return total(samples, name, **tags) > 0

    def all_there(samples: list[Sample]) -> bool:
        scraped.extend(samples)
        return all(there(samples, n, tags) for n, series in expected.items() for tags in series)

    samples = since(
        before, scrape_until(graph.metrics_url, lambda s: all_there(since(before, s)), COUNTS)
    )
    missing = [(n, t) for n, series in expected.items() for t in series if not there(samples, n, t)]
    assert not missing, f"not exported: {missing}"
    for _name, labels, _value in samples:
        assert labels["application"] == "soul" and labels["replica"], labels

    # One render served the four comet users: three joined it, or came after it (hits).
    comet_hits = sum(r.json()["cache"] == "hit" for r in together)
    assert total(samples, "soul_cache_requests", route="/image", result="hit") == 1 + comet_hits
    assert total(samples, "soul_cache_requests", route="/jobs", result="hit") == 1
    assert total(samples, "soul_cache_requests", route="/image", result="miss") == 7 - comet_hits
    assert total(samples, "soul_coalesced_requests") == 3 - comet_hits
    # Five variants (two penguins for nova, one for valentina, one comet, one selfie), each
    # animated, encoded, stored and its GIF measured. Nova's second penguin had a sibling: all
    # its renders were rejected and the most distinct one kept.
    attempts = IngressConfig().dedupe_attempts
    assert total(samples, "soul_dedupe_rejects") == attempts
    assert total(samples, "soul_render_ms") == 4 + attempts
    for name in ("phash", "clip"):  # each render judged by both filters
        assert total(samples, "soul_dedupe_ms", filter=name) == 4 + attempts, name
    for name in ("soul_animate_ms", "soul_transcode_ms", "soul_store_ms", "soul_gif_bytes"):
        assert total(samples, name) == 5, name


def test_a_delivery_logs_one_structured_line_under_its_request_id(observed: Observed) -> None:
    response = observed.graph.client.get(
        "/image", params={"soul_id": NOVA, "cue": "lighthouse", "user_id": "logged"}
    )
    assert response.status_code == 200, response.text
    request_id = response.headers["X-Request-ID"]

    lines = [
        line
        for line in ingress_log_lines(observed.logs_dir)
        if line.get("request_id") == request_id
    ]
    delivered = [line for line in lines if line["message"].startswith("delivered ")]
    assert len(delivered) == 1, lines
    answer = response.json()
    expected = {
        "route": "/image",
        "soul_id": NOVA,
        "pk_id": answer["pk_id"],
        "variant_id": answer["variant_id"],
        "cache": "miss",
        "replayed": False,
        "deployment": "soul_Ingress",
        "application": "soul",
    }
    assert {key: delivered[0].get(key) for key in expected} == expected


def ingress_log_lines(logs_dir: Path) -> list[dict[str, Any]]:
    """Every JSON record the Ingress replicas wrote (Serve writes one file per replica)."""
    return [
        json.loads(line)
        for path in sorted(logs_dir.glob("replica_soul_Ingress_*.log"))
        for line in path.read_text().splitlines()
        if line.startswith("{")
    ]


def test_concurrent_misses_of_one_style_render_in_batches(observed: Observed) -> None:
    """New cues of one soul at once: the Renderer runs them as batched pipeline calls (Serve's
    own batch-size histogram has a batch of more than one), and each user still gets a new
    variant of their own cue."""
    graph = observed.graph

    def batches() -> tuple[float, float]:
        """(batches, batches of one render) the Renderer's ``@serve.batch`` ran so far, on
        every replica: the histogram's count and its first bucket (Ray exports a histogram's
        sum from its buckets' midpoints, so the sum is no count of renders)."""
        samples = scrape(graph.metrics_url, prefix="ray_serve_actual_batch_size")
        mine = [(n, labels, v) for n, labels, v in samples
                if labels["function_name"] == "_render_batch"]  # fmt: skip
        count = sum(v for n, _, v in mine if n.endswith("_count"))
        ones = sum(v for n, labels, v in mine if n.endswith("_bucket") and labels["le"] == "1.0")
        return count, ones

    before = batches()
    cues = ["harbour", "glacier", "meadow", "canyon", "volcano", "orchard"]
    answers = burst(graph, [{"soul_id": NOVA, "cue": c, "user_id": f"b-{c}"} for c in cues])
    assert [r.status_code for r in answers] == [200] * len(cues), [r.text for r in answers]
    assert {r.json()["cache"] for r in answers} == {"miss"}
    assert len({r.json()["variant_id"] for r in answers}) == len(cues)

    # Each replica exports once a second: wait for two scrapes that agree, past the burst.
    deadline, previous, now = time.monotonic() + 60, None, batches()
    while (now != previous or now[0] == before[0]) and time.monotonic() < deadline:
        time.sleep(1.5)
        previous, now = now, batches()
    ran, ones = now[0] - before[0], now[1] - before[1]
    assert ran > 0, "the batches never showed in the metrics"
    assert ones < ran, f"{len(cues)} concurrent misses ran as {ran} batches of one render each"
