"""Jobs over HTTP on a local Ray whose renders are slow enough (many denoising steps) to watch,
cancel or kill mid-way: one JobWorker slot, so tests can line jobs up behind a busy worker.
What jobs deliver, at the session's small render size, is in test_results.py."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx
import pytest
import ray
from job_client import FINISHED, events, job, submit, wait
from shared_graph import JOB_QUEUED_QUOTA, OTHER_KEY, souls_of
from soul_client import Graph

pytestmark = pytest.mark.integration

NOVA, VALENTINA = souls_of("jobs")
STEPS = 24
QUOTA = JOB_QUEUED_QUOTA
# Renders slow enough to cancel mid-way; the shared graph's one JobWorker slot (leases of 3 s,
# watched every 0.1 s) is what these tests were written against.
GRAPH_ARGS: dict[str, Any] = {"renderer": {"steps": STEPS, "width": 128, "height": 128}}


def claims_of(graph: Graph, job_id: str) -> list[Any]:
    return graph.rows(
        "SELECT user_id, variant_id, via FROM user_seen WHERE via LIKE ?", f"%/{job_id}/%"
    )


def test_a_job_is_accepted_then_polled_to_success_and_serves_its_gif(graph: Graph) -> None:
    accepted = submit(graph.client, NOVA, cue="a lighthouse at dawn", user_id="poll")
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
    accepted = submit(graph.client, NOVA, cue="a fox in the snow", user_id="sse")
    received = list(events(graph, accepted["job_id"]))
    names = [name for name, _ in received]
    assert names[0] == "status" and names[-1] == "done"
    steps = [d["step"] for name, d in received if name == "progress" and d["stage"] == "render"]
    assert steps and all(s is None or 1 <= s <= STEPS for s in steps)
    assert received[-1][1]["status"] == "succeeded"
    late = list(events(graph, accepted["job_id"]))  # a late client gets the state, then done
    assert [name for name, _ in late] == ["status", "done"]


def test_a_pack_whose_soul_loses_its_style_midway_ends_partial(graph: Graph) -> None:
    style = graph.client.get(f"/style/{VALENTINA}").json()
    accepted = submit(
        graph.client, VALENTINA, kind="pack", cues=["a cat", "a dog", "an owl"],
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
    busy = submit(graph.client, NOVA, cue="a long voyage", user_id="busy")
    wait(graph, busy["job_id"], lambda d: d["status"] == "running")
    queued = submit(graph.client, NOVA, cue="a quick sketch", user_id="cancel")
    answer = graph.client.post(f"/jobs/{queued['job_id']}/cancel")
    assert answer.json() == {"cancelled": True, "status": "cancelled"}
    again = graph.client.post(f"/jobs/{queued['job_id']}/cancel")
    assert again.json() == {"cancelled": True, "status": "cancelled"}  # idempotent
    assert wait(graph, busy["job_id"])["status"] == "succeeded"
    finished = graph.client.post(f"/jobs/{busy['job_id']}/cancel")
    assert finished.json() == {"cancelled": False, "status": "succeeded"}
    assert claims_of(graph, queued["job_id"]) == []


def test_cancelling_a_running_render_stops_it_within_a_few_steps(graph: Graph) -> None:
    accepted = submit(graph.client, NOVA, cue="a clockwork owl", user_id="stop")
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
    busy = submit(graph.client, NOVA, cue="a slow river", user_id="prio")
    wait(graph, busy["job_id"], lambda d: d["status"] == "running")
    # The queued jobs ask for the busy one's cue for other users: hits once it is done, so the
    # order they start in is all they test, without three more slow renders.
    normal = [submit(graph.client, NOVA, cue="a slow river", user_id=f"prio-{i}") for i in (1, 2)]
    high = submit(graph.client, NOVA, cue="a slow river", user_id="prio-3", priority="high")
    docs = {j["job_id"]: wait(graph, j["job_id"]) for j in [busy, *normal, high]}
    # As times: an ISO string drops its fraction at a whole second ("...:47Z" > "...:47.017Z").
    started = {job_id: datetime.fromisoformat(d["started_at"]) for job_id, d in docs.items()}
    assert all(d["status"] == "succeeded" for d in docs.values())
    assert [docs[j["job_id"]]["result"]["cache"] for j in [*normal, high]] == ["hit"] * 3
    assert started[high["job_id"]] < min(started[n["job_id"]] for n in normal)


def test_a_worker_killed_mid_job_loses_nothing_and_delivers_once(graph: Graph) -> None:
    accepted = submit(graph.client, NOVA, cue="a paper crane", user_id="crash")
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
        jobs = [submit(other, NOVA, cue=f"a quota {i}", user_id="quota") for i in range(QUOTA)]
        body = {"kind": "image", "soul_id": NOVA, "cue": "one more", "user_id": "quota"}
        over = other.post("/jobs", json=body)
        assert over.status_code == 429 and "quota" in over.json()["detail"]
        assert over.headers["retry-after"] and over.json()["request_id"]
        mine = graph.client.get(f"/jobs/{jobs[0]['job_id']}")
        assert mine.status_code == 404  # another client's job does not exist for this one
        for j in jobs:
            other.post(f"/jobs/{j['job_id']}/cancel")
        own = submit(graph.client, NOVA, cue="mine", user_id="quota")  # this client has its own
        graph.client.post(f"/jobs/{own['job_id']}/cancel")  # accepted is all it had to show
