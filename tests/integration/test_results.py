"""What jobs and the variant routes deliver over HTTP, at the session's small render size (no
test here needs a render slow enough to watch mid-way: those are in test_jobs.py): packs,
signed webhooks, refused and idempotent submits, per-client histories, an admin's rebuild,
deletes and cost report, regenerations and motion. The session's regenerate limit is 2."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer

import httpx
import pytest
from job_client import events, job, submit, wait
from shared_graph import ADMIN_KEY, OTHER_KEY, WEBHOOK_SECRET, souls_of
from soul_client import Graph, burst, tenant

from serve_app.jobs.webhooks import SIGNATURE_HEADER, verify
from tests.support import QuietHandler

pytestmark = pytest.mark.integration

NOVA, VALENTINA = souls_of("results")


def test_a_pack_of_five_delivers_five_distinct_never_seen_variants(graph: Graph) -> None:
    accepted = submit(
        graph.client, NOVA, kind="pack", cue="a dancer", count=5, vary="expression", user_id="pack"
    )
    items = [d for name, d in events(graph, accepted["job_id"]) if name == "item"]
    doc = job(graph, accepted["job_id"])
    assert doc["status"] == "succeeded" and doc["progress"] == {**doc["progress"], "done": 5}
    ids = [item["variant_id"] for item in doc["result"]["items"]]
    assert len(set(ids)) == 5 and sorted(i["index"] for i in items) == list(range(5))
    seen = graph.rows("SELECT variant_id FROM user_seen WHERE user_id = ?", tenant("pack"))
    assert sorted(r["variant_id"] for r in seen) == sorted(ids)  # each once, none before


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
        accepted = submit(
            graph.client, NOVA, cue="a kite", user_id="hook", webhook_url=receiver.url
        )
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
