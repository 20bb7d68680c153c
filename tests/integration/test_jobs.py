"""Jobs over HTTP on a local Ray: one JobWorker replica with one slot, so tests can line jobs up
behind a busy worker; renders are slow enough (many denoising steps) to cancel mid-way."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import ray
from shared_graph import ADMIN_KEY, JOB_QUEUED_QUOTA, OTHER_KEY, WEBHOOK_SECRET, souls_of
from soul_client import Graph, burst, tenant

from serve_app.jobs.webhooks import SIGNATURE_HEADER, verify
from tests.support import QuietHandler

pytestmark = pytest.mark.integration

NOVA, VALENTINA = souls_of("jobs")
STEPS = 24
QUOTA = JOB_QUEUED_QUOTA
# Renders slow enough to cancel mid-way; the shared graph's one JobWorker slot (leases of 3 s,
# watched every 0.1 s) and regenerate limit of 2 are what these tests were written against.
GRAPH_ARGS: dict[str, Any] = {"renderer": {"steps": STEPS, "width": 128, "height": 128}}
FINISHED = {"succeeded", "partial", "failed", "cancelled"}


def submit(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/jobs", json={"soul_id": NOVA, "kind": "image", **body})
    assert response.status_code == 202, response.text
    accepted: dict[str, Any] = response.json()
    return accepted


def job(graph: Graph, job_id: str, client: httpx.Client | None = None) -> dict[str, Any]:
    response = (client or graph.client).get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


def wait(
    graph: Graph,
    job_id: str,
    until: Any = None,
    timeout_s: float = 240,
    client: httpx.Client | None = None,
) -> dict[str, Any]:
    """Poll the job until ``until(doc)`` (by default: it finished)."""
    until = until or (lambda d: d["status"] in FINISHED)
    deadline = time.monotonic() + timeout_s
    while True:
        doc = job(graph, job_id, client)
        if until(doc) or time.monotonic() > deadline:
            return doc
        time.sleep(0.1)


def events(graph: Graph, job_id: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with graph.client.stream("GET", f"/jobs/{job_id}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        name = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                yield name, json.loads(line.removeprefix("data: "))


def claims_of(graph: Graph, job_id: str) -> list[Any]:
    return graph.rows(
        "SELECT user_id, variant_id, via FROM user_seen WHERE via LIKE ?", f"%/{job_id}/%"
    )


def test_a_job_is_accepted_then_polled_to_success_and_serves_its_gif(graph: Graph) -> None:
    accepted = submit(graph.client, cue="a lighthouse at dawn", user_id="poll")
    assert accepted["status"] == "queued" and accepted["position"] >= 0
    assert accepted["links"] == {
        "self": f"/jobs/{accepted['job_id']}",
        "events": f"/jobs/{accepted['job_id']}/events",
        "cancel": f"/jobs/{accepted['job_id']}/cancel",
    }
    order = ["queued", "running", "succeeded"]
    seen: list[dict[str, Any]] = []
    wait(graph, accepted["job_id"], lambda d: seen.append(d) or d["status"] in FINISHED)
    statuses = [d["status"] for d in seen]
    assert statuses[-1] == "succeeded"
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)
    done = [d["progress"]["done"] for d in seen]
    assert done == sorted(done) and done[-1] == 1
    assert any(d["progress"]["step"] for d in seen)  # denoising steps were reported
    result = seen[-1]["result"]
    assert result["cache"] == "miss" and seen[-1]["attempts"] == 1
    gif = graph.client.get(result["url"])
    assert gif.status_code == 200 and gif.content[:6] == b"GIF89a"


def test_events_give_the_state_then_progress_with_steps_then_done(graph: Graph) -> None:
    accepted = submit(graph.client, cue="a fox in the snow", user_id="sse")
    received = list(events(graph, accepted["job_id"]))
    names = [name for name, _ in received]
    assert names[0] == "status" and names[-1] == "done"
    steps = [d["step"] for name, d in received if name == "progress" and d["stage"] == "render"]
    assert steps and all(s is None or 1 <= s <= STEPS for s in steps)
    assert received[-1][1]["status"] == "succeeded"
    late = list(events(graph, accepted["job_id"]))  # a late client gets the state, then done
    assert [name for name, _ in late] == ["status", "done"]


def test_a_pack_of_five_delivers_five_distinct_never_seen_variants(graph: Graph) -> None:
    accepted = submit(
        graph.client, kind="pack", cue="a dancer", count=5, vary="expression", user_id="pack"
    )
    items = [d for name, d in events(graph, accepted["job_id"]) if name == "item"]
    doc = job(graph, accepted["job_id"])
    assert doc["status"] == "succeeded" and doc["progress"] == {**doc["progress"], "done": 5}
    ids = [item["variant_id"] for item in doc["result"]["items"]]
    assert len(set(ids)) == 5 and sorted(i["index"] for i in items) == list(range(5))
    seen = graph.rows("SELECT variant_id FROM user_seen WHERE user_id = ?", tenant("pack"))
    assert sorted(r["variant_id"] for r in seen) == sorted(ids)  # each once, none before


def test_a_pack_whose_soul_loses_its_style_midway_ends_partial(graph: Graph) -> None:
    style = graph.client.get(f"/style/{VALENTINA}").json()
    accepted = submit(
        graph.client, kind="pack", soul_id=VALENTINA, cues=["a cat", "a dog", "an owl"],
        user_id="partial",
    )  # fmt: skip
    try:
        for name, _ in events(graph, accepted["job_id"]):
            if name == "item":  # the first item is in: take the style away
                assert graph.client.delete(f"/style/{VALENTINA}").status_code == 204
                break
        doc = wait(graph, accepted["job_id"])
    finally:
        graph.client.post("/style", json={k: v for k, v in style.items() if k != "updated_at_ts"})
    assert doc["status"] == "partial"
    delivered = [i for i in doc["result"]["items"] if i is not None]
    failed = doc["result"]["failed"]
    assert len(delivered) + len(failed) == 3 and delivered and failed
    assert {f["error"]["type"] for f in failed} == {"NoStyle"}


def test_cancelling_queued_and_finished_jobs(graph: Graph) -> None:
    busy = submit(graph.client, cue="a long voyage", user_id="busy")
    wait(graph, busy["job_id"], lambda d: d["status"] == "running")
    queued = submit(graph.client, cue="a quick sketch", user_id="cancel")
    answer = graph.client.post(f"/jobs/{queued['job_id']}/cancel")
    assert answer.json() == {"cancelled": True, "status": "cancelled"}
    again = graph.client.post(f"/jobs/{queued['job_id']}/cancel")
    assert again.json() == {"cancelled": True, "status": "cancelled"}  # idempotent
    assert wait(graph, busy["job_id"])["status"] == "succeeded"
    finished = graph.client.post(f"/jobs/{busy['job_id']}/cancel")
    assert finished.json() == {"cancelled": False, "status": "succeeded"}
    assert claims_of(graph, queued["job_id"]) == []


def test_cancelling_a_running_render_stops_it_within_a_few_steps(graph: Graph) -> None:
    accepted = submit(graph.client, cue="a clockwork owl", user_id="stop")
    started = wait(graph, accepted["job_id"], lambda d: (d["progress"]["step"] or 0) >= 2)
    asked_at = started["progress"]["step"]
    answer = graph.client.post(f"/jobs/{accepted['job_id']}/cancel")
    assert answer.status_code == 200 and answer.json()["cancelled"] is True
    doc = wait(graph, accepted["job_id"])
    assert doc["status"] == "cancelled" and doc["result"] is None
    time.sleep(1)  # the renderer's report of the step it stopped at
    stopped_at = job(graph, accepted["job_id"])["progress"]["step"]
    assert stopped_at is not None and asked_at <= stopped_at < STEPS
    assert stopped_at - asked_at <= 6, (asked_at, stopped_at)
    assert claims_of(graph, accepted["job_id"]) == []  # nothing delivered, nothing claimed
    mine = graph.rows("SELECT variant_id FROM variant WHERE soul_id = ?", NOVA)
    variants = {r["variant_id"] for r in mine}
    files = {
        f.rpartition("/")[2].partition(".")[0]
        for f in graph.objects(f"soul/{NOVA}/")
        if "/variant/" in f
    }
    assert files == variants  # no half-made objects


def test_a_high_priority_job_overtakes_earlier_normal_ones(graph: Graph) -> None:
    busy = submit(graph.client, cue="a slow river", user_id="prio")
    wait(graph, busy["job_id"], lambda d: d["status"] == "running")
    normal = [submit(graph.client, cue=f"a stone {i}", user_id="prio") for i in range(2)]
    high = submit(graph.client, cue="an urgent comet", user_id="prio", priority="high")
    docs = {j["job_id"]: wait(graph, j["job_id"]) for j in [busy, *normal, high]}
    started = {job_id: d["started_at"] for job_id, d in docs.items()}
    assert all(d["status"] == "succeeded" for d in docs.values())
    assert started[high["job_id"]] < min(started[n["job_id"]] for n in normal)


def test_a_worker_killed_mid_job_loses_nothing_and_delivers_once(graph: Graph) -> None:
    accepted = submit(graph.client, cue="a paper crane", user_id="crash")
    wait(graph, accepted["job_id"], lambda d: d["progress"]["stage"] not in ("queued", "starting"))
    [worker] = [
        a for a in ray.util.list_named_actors(all_namespaces=True) if "JobWorker" in a["name"]
    ]
    ray.kill(ray.get_actor(worker["name"], namespace=worker["namespace"]), no_restart=True)
    doc = wait(graph, accepted["job_id"])
    assert doc["status"] == "succeeded" and doc["attempts"] == 2
    claims = claims_of(graph, accepted["job_id"])
    assert [c["variant_id"] for c in claims] == [doc["result"]["variant_id"]]


def test_a_client_over_its_quota_gets_a_429_naming_the_limit(graph: Graph) -> None:
    with httpx.Client(
        base_url=graph.base_url, timeout=60, headers={"Authorization": f"Bearer {OTHER_KEY}"}
    ) as other:
        jobs = [submit(other, cue=f"a quota {i}", user_id="quota") for i in range(QUOTA)]
        body = {"kind": "image", "soul_id": NOVA, "cue": "one more", "user_id": "quota"}
        over = other.post("/jobs", json=body)
        assert over.status_code == 429 and "quota" in over.json()["detail"]
        assert over.headers["retry-after"] and over.json()["request_id"]
        mine = graph.client.get(f"/jobs/{jobs[0]['job_id']}")
        assert mine.status_code == 404  # another client's job does not exist for this one
        for j in jobs:
            other.post(f"/jobs/{j['job_id']}/cancel")
        assert submit(graph.client, cue="mine", user_id="quota")  # this client has its own


class Receiver:
    """A webhook receiver on 127.0.0.1 that answers 500 to the first POST, then 200."""

    def __init__(self) -> None:
        self.received: list[tuple[int, bytes, str]] = []
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                status = 500 if not receiver.received else 200
                receiver.received.append((status, body, self.headers[SIGNATURE_HEADER]))
                self._send(status, b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"


def test_a_webhook_arrives_signed_once_after_a_first_500(graph: Graph) -> None:
    receiver = Receiver()
    try:
        accepted = submit(graph.client, cue="a kite", user_id="hook", webhook_url=receiver.url)
        assert wait(graph, accepted["job_id"])["status"] == "succeeded"
        deadline = time.monotonic() + 30
        while len(receiver.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1)  # nothing more comes
    finally:
        receiver.server.shutdown()
    assert [status for status, _, _ in receiver.received] == [500, 200]
    for _, body, signature in receiver.received:
        assert verify(WEBHOOK_SECRET.encode(), body, signature)
        sent = json.loads(body)
        assert sent["job_id"] == accepted["job_id"] and sent["status"] == "succeeded"
        assert sent["links"]["self"] == f"/jobs/{accepted['job_id']}" and sent["result"]["url"]


def test_bad_job_requests_are_refused_and_write_nothing(graph: Graph) -> None:
    before = graph.rows("SELECT count(*) AS n FROM job")[0]["n"]
    cases = [
        ({"kind": "video", "soul_id": NOVA, "user_id": "u"}, "kind"),
        ({"kind": "rebuild_prompt_key", "soul_id": NOVA}, "kind"),  # an admin route's job
        ({"kind": "image", "soul_id": NOVA, "cue": "a cat", "user_id": "u", "count": 3}, "count"),
        ({"kind": "pack", "soul_id": NOVA, "cue": "a cat", "count": 11, "user_id": "u"}, "count"),
        ({"kind": "pack", "soul_id": NOVA, "user_id": "u", "cues": ["a cat"]}, "cues"),
        ({"kind": "image", "soul_id": NOVA, "cue": "the of", "user_id": "u"}, "cue"),
        ({"kind": "image", "soul_id": NOVA, "cue": "a cat", "user_id": "u",
          "webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"kind": "image", "soul_id": NOVA, "cue": "a cat", "user_id": "u",
          "webhook_url": "https://[example.com/x"}, "webhook_url"),  # urlsplit raises: was a 500
        ({"kind": "image", "soul_id": NOVA, "cue": "a cat", "user_id": "u",
          "webhook_url": "https://example.com:99999/x"}, "webhook_url"),
    ]  # fmt: skip
    for body, field in cases:
        response = graph.client.post("/jobs", json=body)
        assert response.status_code == 422, (body, response.text)
        assert field in response.json()["detail"] and response.json()["request_id"]
    ghost = graph.client.post(
        "/jobs", json={"kind": "image", "soul_id": "ghost", "cue": "a cat", "user_id": "u"}
    )
    assert ghost.status_code == 404
    assert graph.rows("SELECT count(*) AS n FROM job")[0]["n"] == before
    assert graph.client.get("/jobs/01ARZ3NDEKTSV4RRFFQ69G5FAV").status_code == 404
    assert graph.client.get("/jobs/not-a-job").status_code == 422


def test_a_retried_submit_returns_the_same_job_and_lists_page_newest_first(graph: Graph) -> None:
    body = {"kind": "image", "soul_id": NOVA, "cue": "a violin", "user_id": "idem"}
    headers = {"Idempotency-Key": "job-once"}
    first = graph.client.post("/jobs", json=body, headers=headers)
    second = graph.client.post("/jobs", json=body, headers=headers)
    assert first.status_code == second.status_code == 202
    assert first.json()["job_id"] == second.json()["job_id"]
    assert second.headers["idempotent-replayed"] == "true"
    wait(graph, first.json()["job_id"])
    page = graph.client.get("/jobs", params={"user_id": "idem", "limit": 1}).json()
    assert [j["job_id"] for j in page["jobs"]] == [first.json()["job_id"]]
    stats = graph.client.get("/jobs/stats").json()
    assert stats["workers_alive"] >= 1 and stats["run_s"]["p50"] > 0
    estimate = graph.client.get("/estimate", params={"kind": "image", "soul_id": NOVA}).json()
    assert estimate["estimated_s"] > 0
    openapi = graph.client.get("/openapi.json").json()
    assert "429" in openapi["paths"]["/jobs"]["post"]["responses"]
    assert "202" in openapi["paths"]["/jobs"]["post"]["responses"]


def test_two_client_apps_with_a_user_of_the_same_name_never_share_a_history(
    graph: Graph,
) -> None:
    params = {"soul_id": NOVA, "cue": "a tenant's teapot", "user_id": "u1"}
    with httpx.Client(
        base_url=graph.base_url, timeout=300, headers={"Authorization": f"Bearer {OTHER_KEY}"}
    ) as other:
        mine = graph.client.get("/image", params=params).json()
        theirs = other.get("/image", params=params).json()
    assert mine["cache"] == "miss"
    assert theirs["cache"] == "hit" and theirs["variant_id"] == mine["variant_id"]  # unseen there
    again = graph.client.get("/image", params=params).json()
    assert again["cache"] == "miss" and again["variant_id"] != mine["variant_id"]
    rows = graph.rows("SELECT user_id FROM user_seen WHERE variant_id = ?", mine["variant_id"])
    assert sorted(r["user_id"] for r in rows) == sorted([tenant("u1"), tenant("u1", OTHER_KEY)])

    # Each client reads its own user's history, newest variant first, a page at a time.
    with httpx.Client(
        base_url=graph.base_url, timeout=60, headers={"Authorization": f"Bearer {OTHER_KEY}"}
    ) as other:
        their_seen = other.get("/users/u1/seen").json()
    assert [v["variant_id"] for v in their_seen["seen"]] == [mine["variant_id"]]
    first = graph.client.get("/users/u1/seen", params={"limit": 1}).json()
    assert [v["variant_id"] for v in first["seen"]] == [again["variant_id"]]
    assert first["next_after"] == again["variant_id"]
    rest = graph.client.get("/users/u1/seen", params={"after": first["next_after"]}).json()
    assert [v["variant_id"] for v in rest["seen"]][:1] == [mine["variant_id"]]
    assert rest["seen"][0]["seen_at"] and rest["seen"][0]["pk_id"] == mine["pk_id"]
    cover = graph.client.get(rest["seen"][0]["cover_url"])
    assert cover.status_code == 200 and cover.content[:4] == b"\x89PNG"
    thumbnail = graph.client.get(rest["seen"][0]["thumbnail_url"])
    assert thumbnail.status_code == 200 and thumbnail.content[8:12] == b"WEBP"
    for params in ({"after": "not-a-cursor"}, {"limit": 0}, {"limit": 201}):
        refused = graph.client.get("/users/u1/seen", params=params)
        assert refused.status_code == 422 and refused.json()["request_id"], params
    assert graph.client.get("/users/no%20such/seen").status_code == 422


def test_an_admin_rebuilds_a_souls_keys_as_a_job_keeping_ids_and_serving(graph: Graph) -> None:
    first = graph.image(NOVA, "a lighthouse rebuilt", "rebuild-1")
    assert first.status_code == 200, first.text
    keys = graph.client.get("/keys", params={"soul_id": NOVA, "limit": 200}).json()["keys"]
    admin = httpx.Client(
        base_url=graph.base_url, timeout=60, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    jobs_before = graph.rows("SELECT count(*) AS n FROM job")[0]["n"]
    refused = [
        (graph.client, {"soul_id": NOVA}, 401),  # an API key is not an admin key
        (admin, {"soul_id": "ghost"}, 404),
        (admin, {"soul_id": NOVA, "cue": "a cat"}, 422),
        (admin, {"soul_id": NOVA, "kind": "image"}, 422),
    ]
    for client, body, status in refused:
        response = client.post("/admin/rebuild_prompt_key", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["request_id"]
    assert graph.rows("SELECT count(*) AS n FROM job")[0]["n"] == jobs_before

    accepted = admin.post("/admin/rebuild_prompt_key", json={"soul_id": NOVA})
    assert accepted.status_code == 202, accepted.text
    doc = wait(graph, accepted.json()["job_id"], client=admin)
    assert doc["status"] == "succeeded" and doc["kind"] == "rebuild_prompt_key", doc
    assert doc["result"]["keys"] == len(keys) and doc["result"]["index"] == "exact"
    assert doc["progress"]["done"] == doc["progress"]["total"] == len(keys)
    assert graph.client.get(f"/jobs/{doc['job_id']}").status_code == 404  # the admin's own
    after = graph.client.get("/keys", params={"soul_id": NOVA, "limit": 200}).json()["keys"]
    assert [k["pk_id"] for k in after] == [k["pk_id"] for k in keys]
    assert [k["variants"] for k in after] == [k["variants"] for k in keys]
    again = graph.image(NOVA, "a lighthouse rebuilt", "rebuild-2")
    assert again.status_code == 200 and again.json()["cache"] == "hit"
    assert again.json()["variant_id"] == first.json()["variant_id"]
    admin.close()


def test_an_admin_deletes_a_variant_that_no_one_is_sent_again(graph: Graph) -> None:
    made = graph.image(NOVA, "a paper lantern", "del-1").json()
    variant_id, pk_id = made["variant_id"], made["pk_id"]
    shown = graph.client.get(f"/variants/{variant_id}")
    assert shown.status_code == 200, shown.text
    assert shown.json()["pk_id"] == pk_id and shown.json()["thumbnail_url"]
    assert graph.client.get(shown.json()["url"]).status_code == 200

    admin = httpx.Client(
        base_url=graph.base_url, timeout=60, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert graph.client.delete(f"/variants/{variant_id}").status_code == 401  # not an admin key
    assert admin.delete("/variants/not-a-ulid").status_code == 422
    assert admin.delete(f"/variants/{'0' * 26}").status_code == 404
    assert admin.delete(f"/variants/{variant_id}").status_code == 204
    for answer in (
        admin.delete(f"/variants/{variant_id}"),
        graph.client.get(f"/variants/{variant_id}"),
    ):
        assert answer.status_code == 410 and answer.json()["request_id"], answer.text
    assert graph.client.get(shown.json()["url"]).status_code == 404  # its objects are gone

    # A burst of users on its key: every one gets a variant, none the deleted one.
    users = [{"soul_id": NOVA, "cue": "a paper lantern", "user_id": f"del-b{i}"} for i in range(6)]
    answers = burst(graph, users)
    assert [r.status_code for r in answers] == [200] * len(users)
    assert variant_id not in {r.json()["variant_id"] for r in answers}
    assert variant_id not in [
        v["variant_id"] for v in graph.client.get("/users/del-1/seen").json()["seen"]
    ]
    assert graph.rows("SELECT 1 FROM user_seen WHERE variant_id = ?", variant_id)  # history kept

    # Deleting the whole key deletes every variant it has; its next request renders anew.
    live = {r.json()["variant_id"] for r in answers}
    deleted = admin.delete(f"/keys/{pk_id}")
    assert deleted.status_code == 200 and deleted.json() == {"pk_id": pk_id, "deleted": len(live)}
    assert all(graph.client.get(f"/variants/{v}").status_code == 410 for v in live)
    assert graph.client.get(f"/keys/{pk_id}/variants").json() == []
    again = graph.image(NOVA, "a paper lantern", "del-b0").json()
    assert again["cache"] == "miss" and again["variant_id"] not in live
    assert admin.delete(f"/keys/{NOVA}:{'0' * 40}").status_code == 404
    admin.close()


def test_a_regeneration_is_a_new_variant_of_the_key_for_its_user(graph: Graph) -> None:
    original = graph.image(NOVA, "a clockwork bird", "regen-1").json()
    route = f"/variants/{original['variant_id']}/regenerate"
    body = {"user_id": "regen-1", "seed": 42, "prompt_extra": "in the rain"}
    derived = graph.client.post(route, json=body)
    assert derived.status_code == 200, derived.text
    answer = derived.json()
    assert answer["cache"] == "miss" and answer["pk_id"] == original["pk_id"]
    assert answer["variant_id"] != original["variant_id"] and answer["thumbnail_url"]
    [row] = graph.rows(
        "SELECT seed, meta_json FROM variant WHERE variant_id = ?", answer["variant_id"]
    )
    meta = json.loads(row["meta_json"]) if isinstance(row["meta_json"], str) else row["meta_json"]
    assert row["seed"] == 42 and meta["parent_variant_id"] == original["variant_id"]
    assert meta["prompt"].startswith("in the rain, ")
    seen = graph.rows("SELECT user_id FROM user_seen WHERE variant_id = ?", answer["variant_id"])
    assert [r["user_id"] for r in seen] == [tenant("regen-1")]

    from_cover = graph.client.post(route, json={"user_id": "regen-2", "strength": 0.6})
    assert from_cover.status_code == 200, from_cover.text
    over = graph.client.post(route, json={"user_id": "regen-3"})
    assert over.status_code == 409 and "regenerate_limit" in over.json()["detail"]
    for bad in ({"user_id": "regen-3", "strength": 0}, {"user_id": "regen-3", "strength": 1.5},
                {"user_id": "regen-3", "colour": "red"}, {"strength": 0.5}):  # fmt: skip
        refused = graph.client.post(route, json=bad)
        assert refused.status_code == 422 and refused.json()["request_id"], bad
    unknown = graph.client.post(f"/variants/{'0' * 26}/regenerate", json={"user_id": "regen-3"})
    assert unknown.status_code == 404


def test_a_variant_is_set_in_motion_anew_for_its_user(graph: Graph) -> None:
    original = graph.image(VALENTINA, "a glass harp", "move-1").json()
    route = f"/variants/{original['variant_id']}/animate"
    moved = graph.client.post(route, json={"user_id": "move-1", "mode": "subtle", "frames": 6})
    assert moved.status_code == 200, moved.text
    answer = moved.json()
    assert answer["cache"] == "miss" and answer["variant_id"] != original["variant_id"]
    gif = graph.client.get(answer["url"])
    assert gif.status_code == 200 and gif.headers["content-type"] == "image/gif"
    video = graph.client.post(route, json={"user_id": "move-3", "mode": "video", "frames": 6})
    assert video.status_code == 200, video.text  # Stable Video Diffusion from the cover
    [row] = graph.rows(
        "SELECT meta_json FROM variant WHERE variant_id = ?", video.json()["variant_id"]
    )
    meta = json.loads(row["meta_json"]) if isinstance(row["meta_json"], str) else row["meta_json"]
    assert (meta["animation"], meta["frame_count"], meta["video_model"]) == ("video", 6, "tiny-svd")
    for bad in ({"user_id": "move-1", "mode": "wobbly"}, {"user_id": "move-1", "mode": "subtle",
                "frames": 40}, {"mode": "subtle"}):  # fmt: skip
        refused = graph.client.post(route, json=bad)
        assert refused.status_code == 422 and refused.json()["request_id"], bad
    nova = graph.image(NOVA, "a glass harp", "move-2").json()  # nova has no motion module
    conflict = graph.client.post(
        f"/variants/{nova['variant_id']}/animate", json={"user_id": "move-2", "mode": "animated"}
    )
    assert conflict.status_code == 409 and "motion_module" in conflict.json()["detail"]


def test_an_admin_reads_what_variants_cost_per_soul_and_day(graph: Graph) -> None:
    made = graph.image(VALENTINA, "a copper kettle", "cost-1")
    assert made.status_code == 200, made.text
    admin = httpx.Client(
        base_url=graph.base_url, timeout=60, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    report = admin.get("/stats/cost")
    assert report.status_code == 200, report.text
    body = report.json()
    today = datetime.now(UTC).date().isoformat()
    [valentina] = [d for d in body["days"] if d["day"] == today and d["soul_id"] == VALENTINA]
    assert valentina["variants"] >= 1 and valentina["render_s"] > 0 and valentina["usd"] > 0
    assert body["today_usd"] >= valentina["usd"] and body["usd"] >= body["today_usd"]
    assert body["daily_budget_usd"] is None and body["budget_warning"] is False
    assert admin.get("/stats/cost", params={"since": "2999-01-01"}).json()["days"] == []
    for since in ("yesterday", "0", "2026-02-30"):  # a day of the calendar, spelled ISO
        bad = admin.get("/stats/cost", params={"since": since})
        assert bad.status_code == 422 and "since" in bad.text and bad.json()["request_id"], since
    assert graph.client.get("/stats/cost").status_code == 401  # an API key is not an admin key
    admin.close()
