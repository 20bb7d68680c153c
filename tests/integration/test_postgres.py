"""The graph on PostgreSQL with 2 ingress and 2 catalog replicas, over HTTP: user-unique delivery
under concurrent load, renders shared across replicas, idempotent retries, a store outage."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ray import serve
from soul_client import (
    API_KEY,
    TEST_ARGS,
    Graph,
    burst,
    free_port,
    scrape,
    scrape_until,
    tenant,
    total,
)

from serve_app.local import local_graph
from serve_app.schemas import Variant
from tests.support import postgres_outage, temporary_database

# Its own graph: PostgreSQL with 2 ingress and 2 catalog replicas, and an outage of the store.
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pg(
    tmp_path_factory: pytest.TempPathFactory, own_ray: None, tiny_models: Path
) -> Iterator[Graph]:
    with temporary_database() as url:
        data_dir = tmp_path_factory.mktemp("soul-pg")
        (data_dir / "models").symlink_to(tiny_models)
        env = {
            "SOUL_API_KEYS": json.dumps([API_KEY]),
            "SOUL_TORCH_THREADS": "1",
            "SOUL_DATABASE_URL": url,
            "SOUL_DATABASE_TIMEOUT_S": "5",  # a loaded machine waits for a pooled connection
        }
        args = {**TEST_ARGS, "replicas": {"Ingress": 2, "Catalog": 2}}
        metrics_port = free_port()
        with local_graph(
            data_dir,
            port=free_port(),
            args=args,
            num_cpus=4,
            env=env,
            metrics_port=metrics_port,
        ) as base:
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            graph = Graph(base, data_dir, database_url=url, metrics_url=metrics_url)
            yield graph
            graph.client.close()


def params(cue: str, user: str, soul: str = "nova") -> dict[str, str]:
    return {"soul_id": soul, "cue": cue, "user_id": user}


def variants_of(graph: Graph, pk_id: str) -> list[str]:
    rows = graph.rows("SELECT variant_id FROM variant WHERE pk_id = ? ORDER BY variant_id", pk_id)
    return [r["variant_id"] for r in rows]


def test_two_ingress_and_two_catalog_replicas_on_postgres(pg: Graph) -> None:
    deployments = serve.status().applications["soul"].deployments
    for name in ["Ingress", "Catalog"]:
        assert deployments[name].replica_states == {"RUNNING": 2}, deployments[name]
    ready = pg.client.get("/ready")
    assert ready.status_code == 200 and ready.json()["checks"]["catalog"] == "ok"
    assert pg.rows("SELECT soul_id FROM soul ORDER BY soul_id")[0]["soul_id"] == "nova"


def test_a_sixteen_concurrent_requests_of_one_user_get_sixteen_variants(pg: Graph) -> None:
    responses = burst(pg, [params("glacier", "solo")] * 16)
    assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses]
    ids = [r.json()["variant_id"] for r in responses]
    assert len(set(ids)) == 16
    [pk] = {r.json()["pk_id"] for r in responses}
    assert sorted(ids) == variants_of(pg, pk)
    seen = pg.rows("SELECT variant_id FROM user_seen WHERE user_id = ?", tenant("solo"))
    assert sorted(r["variant_id"] for r in seen) == sorted(ids)


def test_b_eight_users_asking_a_new_cue_share_exactly_one_render(pg: Graph) -> None:
    coalesced_before = total(scrape(pg.metrics_url), "soul_coalesced_requests")
    responses = burst(pg, [params("lighthouse", f"fan{i}") for i in range(8)])
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    [variant_id] = {r.json()["variant_id"] for r in responses}
    [pk] = {r.json()["pk_id"] for r in responses}
    assert variants_of(pg, pk) == [variant_id]
    key_hash = pk.split(":")[1]
    assert len(pg.objects(f"soul/nova/key/{key_hash}/")) == 5  # gif, webp, cover, thumb, sidecar

    # Seven of the eight were served by the one render: as coalesced misses, or as hits if they
    # arrived after it; each counted once, whichever replica it went through.
    hits = sum(r.json()["cache"] == "hit" for r in responses)
    expected = coalesced_before + 7 - hits
    samples = scrape_until(
        pg.metrics_url,
        lambda s: total(s, "soul_coalesced_requests") >= expected,
        ("soul_coalesced_requests",),
    )
    assert total(samples, "soul_coalesced_requests") == expected


def test_concurrent_claims_of_one_user_take_distinct_variants_and_count_races(pg: Graph) -> None:
    made = [pg.image(**params("harbor lights", "maker")).json() for _ in range(4)]
    pk_id, variant_ids = made[0]["pk_id"], sorted(m["variant_id"] for m in made)
    catalog = serve.get_deployment_handle("Catalog", app_name="soul")

    async def claims(user_id: str) -> list[Variant | None]:
        return await asyncio.gather(
            *(catalog.claim_unseen.remote(pk_id, user_id) for _ in range(6))
        )

    # Six claims at once for four variants, spread over both Catalog replicas: each variant is
    # claimed once, the losers of a race move on, two come back empty. Races depend on how
    # the claims interleave, so a few users try.
    for attempt in range(5):
        claimed = [v.variant_id for v in asyncio.run(claims(f"racer{attempt}")) if v]
        assert sorted(claimed) == variant_ids
        samples = scrape_until(
            pg.metrics_url, lambda s: total(s, "soul_claim_races") > 0, ("soul_claim_races",), 5
        )
        if total(samples, "soul_claim_races") > 0:
            break
    assert total(samples, "soul_claim_races") > 0


def test_c_mixed_burst_never_delivers_a_variant_twice_to_a_user(pg: Graph) -> None:
    users = [f"mixer{i}" for i in range(10)]
    cues = ["comet", "harbor", "maple tree", "violin", "desert fox"]
    requests = [params(cue, user) for user in users for cue in cues for _ in range(6)]
    random.Random(7).shuffle(requests)
    responses = burst(pg, requests, concurrency=16)
    assert Counter(r.status_code for r in responses) == {200: len(requests)}

    delivered: dict[str, list[str]] = defaultdict(list)
    for request, response in zip(requests, responses, strict=True):
        delivered[request["user_id"]].append(response.json()["variant_id"])
    for user, ids in delivered.items():
        assert len(ids) == len(set(ids)) == 30, f"{user} got a variant twice"
    rows = pg.rows(
        "SELECT user_id, variant_id FROM user_seen WHERE user_id LIKE ?", tenant("mixer%")
    )
    claimed = {(r["user_id"], r["variant_id"]) for r in rows}
    assert claimed == {(tenant(u), v) for u, ids in delivered.items() for v in ids}
    renders = len({v for ids in delivered.values() for v in ids})
    assert 30 <= renders < len(requests)  # each cue needs 6 variants; others are reused


def test_idempotent_retry_replays_the_same_variant(pg: Graph) -> None:
    key = {"Idempotency-Key": "retry-penguin-1"}
    first = pg.client.get("/image", params=params("penguin", "retrier"), headers=key)
    again = pg.client.get("/image", params=params("penguin", "retrier"), headers=key)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["variant_id"] == first.json()["variant_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    fresh = pg.client.get("/image", params=params("penguin", "retrier"))
    assert fresh.json()["variant_id"] != first.json()["variant_id"]
    assert len(pg.rows("SELECT 1 FROM user_seen WHERE user_id = ?", tenant("retrier"))) == 2

    other = pg.client.get("/image", params=params("walrus", "retrier"), headers=key)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    stranger = httpx.get(
        f"{pg.base_url}/image",
        params=params("penguin", "retrier"),
        headers={**key, "Authorization": "Bearer nobody"},
    )
    assert stranger.status_code == 401


def test_retry_while_the_first_still_runs_is_a_409(pg: Graph) -> None:
    key = {"Idempotency-Key": "slow-first"}
    first: dict[str, httpx.Response] = {}

    def send_first() -> None:
        first["r"] = pg.client.get("/image", params=params("aurora", "impatient"), headers=key)

    worker = threading.Thread(target=send_first)
    worker.start()
    time.sleep(0.3)  # a miss renders for longer than this
    retry = pg.client.get("/image", params=params("aurora", "impatient"), headers=key)
    worker.join()
    assert retry.status_code == 409, retry.text
    assert "still running" in retry.json()["detail"] and retry.headers["Retry-After"]
    assert first["r"].status_code == 200
    replay = pg.client.get("/image", params=params("aurora", "impatient"), headers=key)
    assert replay.json()["variant_id"] == first["r"].json()["variant_id"]


def test_idempotent_style_writes(pg: Graph) -> None:
    nova = pg.client.get("/style/nova").json()
    body = {**nova, "negatives": ["blurry", "watermark"]}
    key = {"Idempotency-Key": "style-write-1"}
    first = pg.client.post("/style", json=body, headers=key)
    again = pg.client.post("/style", json=body, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json()["updated_at_ts"] == first.json()["updated_at_ts"]
    assert again.headers["Idempotent-Replayed"] == "true"
    changed = pg.client.post("/style", json={**body, "negatives": []}, headers=key)
    assert changed.status_code == 422

    delete = {"Idempotency-Key": "style-delete-1"}
    assert pg.client.delete("/style/valentina", headers=delete).status_code == 204
    assert pg.client.delete("/style/valentina", headers=delete).status_code == 204  # replayed
    assert pg.client.delete("/style/valentina").status_code == 404
    valentina = {"soul_id": "valentina", "base_model_ref": "tiny-sdxl"}
    assert pg.client.post("/style", json=valentina).status_code == 200


def test_postgres_stopped_mid_run_is_a_503_then_recovers(pg: Graph) -> None:
    assert pg.image("nova", "anchor", "sailor").status_code == 200
    before = pg.rows("SELECT count(*) AS n FROM variant")[0]["n"]
    with postgres_outage():
        ready = pg.client.get("/ready")
        assert ready.status_code == 503, ready.text
        assert ready.json()["checks"]["catalog"].startswith("unavailable")
        assert "catalog" in ready.json()["detail"] and ready.json()["request_id"]
        for cue in ["anchor", "new during outage"]:
            r = pg.image("nova", cue, "sailor")
            assert r.status_code == 503, r.text
            assert r.headers["Retry-After"] and "retry" in r.json()["detail"]
    assert pg.rows("SELECT count(*) AS n FROM variant")[0]["n"] == before  # nothing half-written
    # Each catalog replica's pool reconnects on its own (with backoff), so poll until both
    # answer: /ready and /image reach whichever replica Serve picks.
    deadline = time.monotonic() + 90
    while not all(
        status == 200
        for status in (
            pg.client.get("/ready").status_code,
            pg.image("nova", "anchor", "sailor").status_code,
            pg.image("nova", "new during outage", "sailor").status_code,
        )
    ):
        assert time.monotonic() < deadline, "the graph did not recover after PostgreSQL returned"
        time.sleep(0.5)
