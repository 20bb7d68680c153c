"""The storyboard routes over the real Catalog engine (SQLite) and a local object store, without
Ray: a script is sent, compiled against the project's locked assets into scenes (an unresolved
name: a 422 listing each one and where, nothing written), a scene is read with its pins and
hash, validation names what blocks a render; every route answers 404 to another client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deployments.catalog import CatalogEngine
from serve_app.api.deps import key_scope
from serve_app.catalog.souls import load_souls
from serve_app.settings import Settings
from serve_app.storage.sqlite import SQLiteStore
from tests.support import run
from tests.unit.handles import LocalHandle
from tests.unit.ingress_app import ingress_client
from tests.unit.test_storyboard_catalog import SCRIPT

MINE, THEIRS = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
ASSETS = [
    ("character", "Nova", True),
    ("character", "Marco", False),
    ("environment", "Lighthouse", True),
    ("prop", "Lantern", True),
]


@pytest.fixture
def client(tmp_path: Path, embedder: LocalHandle) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path)
    engine = CatalogEngine(SQLiteStore(tmp_path / "catalog.db"))
    run(engine.start(load_souls("config/souls.yaml")))
    with ingress_client(settings, engine, embedder) as made:
        yield made
    run(engine.close())


def project(client: TestClient, assets: list[tuple[str, str, bool]]) -> tuple[str, dict[str, str]]:
    """A project with these assets, each locked or not; their ids by name."""
    made = client.post("/v1/projects", json={"name": "Keeper"}, headers=MINE)
    pid = str(made.json()["project_id"])
    ids = {}
    for kind, name, lock in assets:
        spec = {"asset_type": kind, "name": name, "canonical_prompt": f"{name} prompt"}
        answer = client.post(f"/v1/projects/{pid}/assets:generate", json=spec, headers=MINE)
        assert answer.status_code == 202, answer.text
        ids[name] = answer.json()["asset"]["asset_id"]
        if lock:
            locked = client.post(f"/v1/projects/{pid}/assets/{ids[name]}:lock", headers=MINE)
            assert locked.status_code == 200, locked.text
    return pid, ids


def script(client: TestClient, pid: str, text: str = SCRIPT) -> dict[str, Any]:
    made = client.post(
        f"/v1/projects/{pid}/scripts", json={"title": "Keeper", "raw_text": text}, headers=MINE
    )
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def test_a_script_compiles_to_scenes_that_validate(client: TestClient) -> None:
    pid, ids = project(client, ASSETS)
    sent = script(client, pid)
    assert sent["status"] == "draft" and sent["raw_text"] == SCRIPT
    url = f"/v1/projects/{pid}/scripts/{sent['script_id']}"
    compiled = client.post(url + ":compile", headers=MINE)
    assert compiled.status_code == 200, compiled.text
    body = compiled.json()
    assert body["script"]["status"] == "compiled" and body["script"]["form"] == "fountain"
    (scene,) = body["scenes"]
    assert scene["compiler_version"] == "storyboard-compiler/1"
    assert scene["graph_hash"].startswith("sha256:") and scene["size"] == [1344, 768]
    cast = scene["graph"]["characters"]
    assert [(c["asset_id"], c["pin"]) for c in cast] == [
        (ids["Nova"], f"{ids['Nova']}@v1"),
        (ids["Marco"], None),
    ]
    assert scene["graph"]["camera"] == {"shot_size": "wide", "angle": "low"}
    scene_url = f"/v1/projects/{pid}/scenes/{scene['scene_id']}"
    got = client.get(scene_url, headers=MINE).json()
    assert got["graph_hash"] == scene["graph_hash"] and got["graph"] == scene["graph"]
    assert client.get(url, headers=MINE).json()["scene_ids"] == [scene["scene_id"]]
    checked = client.post(scene_url + ":validate", headers=MINE).json()
    assert not checked["renderable"]
    assert [(b["kind"], b["asset_id"]) for b in checked["blockers"]] == [
        ("unlocked_asset", ids["Marco"])
    ]
    client.post(f"/v1/projects/{pid}/assets/{ids['Marco']}:lock", headers=MINE)
    again = client.post(url + ":compile", headers=MINE).json()["scenes"][0]
    assert again["scene_id"] == scene["scene_id"] and again["graph_hash"] != scene["graph_hash"]
    assert client.post(scene_url + ":validate", headers=MINE).json()["renderable"]


def test_unlocking_a_version_a_scene_pins_is_a_409_naming_the_scene(client: TestClient) -> None:
    pid, ids = project(client, [(kind, name, True) for kind, name, _ in ASSETS])
    sent = script(client, pid)
    (scene,) = client.post(
        f"/v1/projects/{pid}/scripts/{sent['script_id']}:compile", headers=MINE
    ).json()["scenes"]
    events = client.get(f"/v1/projects/{pid}/events", headers=MINE).json()["events"]
    house = f"/v1/projects/{pid}/assets/{ids['Lighthouse']}"
    refused = client.post(house + ":unlock", headers=MINE)
    assert refused.status_code == 409, refused.text
    assert scene["scene_id"] in refused.json()["detail"]
    assert [e["loc"] for e in refused.json()["errors"]] == [["scenes", scene["scene_id"]]]
    assert client.get(house, headers=MINE).json()["version"]["is_locked"]
    assert client.get(f"/v1/projects/{pid}/events", headers=MINE).json()["events"] == events
    assert client.post(house + ":unlock", headers=THEIRS).status_code == 404


def test_an_unresolved_name_is_a_422_listing_each_one_and_writes_nothing(
    client: TestClient,
) -> None:
    pid, _ = project(client, ASSETS[:1])
    sent = script(client, pid)
    refused = client.post(f"/v1/projects/{pid}/scripts/{sent['script_id']}:compile", headers=MINE)
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert {e["name"] for e in body["errors"]} == {"MARCO", "LIGHTHOUSE", "Lantern"}
    assert all(e["line"] > 0 and e["loc"][0] == "raw_text" for e in body["errors"])
    assert "3 unresolved name(s)" in body["detail"] and "'MARCO' (line" in body["detail"]
    events = client.get(f"/v1/projects/{pid}/events?limit=200", headers=MINE).json()["events"]
    assert "script.compiled" not in [e["kind"] for e in events]
    again = client.get(f"/v1/projects/{pid}/scripts/{sent['script_id']}", headers=MINE)
    assert again.json()["status"] == "draft"


def test_a_refused_script_body_writes_nothing(client: TestClient) -> None:
    pid, _ = project(client, [])
    for body in ({"raw_text": ""}, {"raw_text": "x", "form": "pdf"}, {"text": "x"}):
        answer = client.post(f"/v1/projects/{pid}/scripts", json=body, headers=MINE)
        assert answer.status_code == 422, answer.text
    events = client.get(f"/v1/projects/{pid}/events", headers=MINE).json()["events"]
    assert [e["kind"] for e in events] == ["project.created"]


def test_every_storyboard_route_is_a_404_to_another_client(client: TestClient) -> None:
    pid, _ = project(client, ASSETS)
    sent = script(client, pid)
    url = f"/v1/projects/{pid}/scripts/{sent['script_id']}"
    scene = client.post(url + ":compile", headers=MINE).json()["scenes"][0]["scene_id"]
    calls = [
        ("post", f"/v1/projects/{pid}/scripts", {"raw_text": SCRIPT}),
        ("get", url, None),
        ("post", url + ":compile", None),
        ("get", f"/v1/projects/{pid}/scenes/{scene}", None),
        ("post", f"/v1/projects/{pid}/scenes/{scene}:validate", None),
    ]
    for method, path, body in calls:
        answer = client.request(method, path, json=body, headers=THEIRS)
        assert answer.status_code == 404, (method, path, answer.text)
        assert "project_id" in answer.json()["detail"]


def compiled_scene(client: TestClient, pid: str, script_id: str | None = None) -> str:
    """The first scene of a script sent now (or ``script_id``) compiled."""
    script_id = script_id or script(client, pid)["script_id"]
    url = f"/v1/projects/{pid}/scripts/{script_id}:compile"
    return str(client.post(url, headers=MINE).json()["scenes"][0]["scene_id"])


def test_a_scene_renders_as_a_job_and_an_unlocked_asset_is_a_409(client: TestClient) -> None:
    pid, ids = project(client, ASSETS)
    scene = compiled_scene(client, pid)
    renders = f"/v1/projects/{pid}/scenes/{scene}/renders"
    refused = client.post(renders, json={"frames": 2}, headers=MINE)
    assert refused.status_code == 409 and ids["Marco"] in refused.json()["detail"], refused.text
    assert "MARCO" in refused.json()["detail"]
    client.post(f"/v1/projects/{pid}/assets/{ids['Marco']}:lock", headers=MINE)
    assert compiled_scene(client, pid, "scr_" + scene[4:30]) == scene
    assert client.post(renders, json={"frames": 0}, headers=MINE).status_code == 422
    accepted = client.post(renders, json={"frames": 2}, headers=MINE)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    got = client.get(f"/v1/projects/{pid}/renders/{job_id}", headers=MINE).json()
    assert (got["kind"], got["status"], got["progress"]["total"]) == ("scene_render", "queued", 2)
    again = client.post(
        f"/v1/projects/{pid}/renders/{job_id}:rerender", json={"new_seed": True}, headers=MINE
    )
    assert again.status_code == 202, again.text
    other = project(client, [])[0]
    assert client.get(f"/v1/projects/{other}/renders/{job_id}", headers=MINE).status_code == 404
    for method, path, body in (
        ("post", renders, {"frames": 1}),
        ("get", f"/v1/projects/{pid}/renders/{job_id}", None),
        ("post", f"/v1/projects/{pid}/renders/{job_id}:rerender", {}),
    ):
        answer = client.request(method, path, json=body, headers=THEIRS)
        assert answer.status_code == 404, (method, path, answer.text)


def test_the_timeline_decisions_and_images_over_http(client: TestClient) -> None:
    pid, ids = project(client, [(k, n, True) for k, n, _ in ASSETS])
    scene = compiled_scene(client, pid)
    job = client.post(f"/v1/projects/{pid}/scenes/{scene}/renders", json={}, headers=MINE)
    assert job.status_code == 202, job.text
    engine = client.app.state.services.catalog.engine  # type: ignore[attr-defined]
    frame = f"frm_{scene[4:]}_00"
    failed = {"passed": False, "failed": [f"identity:{ids['Nova']}"], "checks": []}
    key = f"proj/{pid}/frames/{frame}/v1.png"
    run(engine.record_frame(key_scope("key-a"), pid, frame, 1, key, failed))
    line = client.get(f"/v1/projects/{pid}/timeline", headers=MINE).json()
    (shown,) = line["scenes"][0]["frames"]
    assert shown["shown"]["status"] == "needs_review" and shown["shown"]["url"]
    assert shown["shown"]["consistency_report"] == failed
    url = f"/v1/projects/{pid}/frames/{frame}"
    approved = client.post(url + ":approve", json={"note": "ok by me"}, headers=MINE)
    assert approved.status_code == 200, approved.text
    assert approved.json()["approved_version"] == 1
    assert approved.json()["shown"]["status"] == "approved"
    events = client.get(f"/v1/projects/{pid}/events?limit=200", headers=MINE).json()["events"]
    (exception,) = [e for e in events if e["kind"] == "frame.exception_approved"]
    assert exception["payload"]["note"] == "ok by me"
    assert client.post(url + ":rollback", headers=MINE).status_code == 409
    rejected = client.post(url + ":reject", json={}, headers=MINE).json()
    assert rejected["approved_version"] is None and rejected["shown"]["status"] == "rejected"
    images = client.get(f"/v1/projects/{pid}/images?type=scene", headers=MINE).json()["images"]
    assert [i["frame_id"] for i in images] == [frame] and images[0]["url"]
    by_cast = client.get(f"/v1/projects/{pid}/images?character_id={ids['Nova']}", headers=MINE)
    assert [i["frame_id"] for i in by_cast.json()["images"]] == [frame]
    assert client.get(f"/v1/projects/{pid}/images?type=poster", headers=MINE).status_code == 422
    reordered = client.post(
        f"/v1/projects/{pid}/timeline:reorder", json={"scene_ids": [scene]}, headers=MINE
    )
    assert reordered.status_code == 200, reordered.text
    assert (
        client.post(
            f"/v1/projects/{pid}/timeline:reorder", json={"scene_ids": []}, headers=MINE
        ).status_code
        == 422
    )
    pdf = client.post(f"/v1/projects/{pid}/exports/pdf", json={"per_page": 4}, headers=MINE)
    assert pdf.status_code == 202, pdf.text
    queued = client.get(f"/jobs/{pdf.json()['job_id']}", headers=MINE).json()
    assert (queued["kind"], queued["soul_id"]) == ("storyboard_export", pid)
    sequence = client.post(f"/v1/projects/{pid}/exports/image-sequence", headers=MINE)
    assert sequence.status_code == 202, sequence.text
    ready = client.post(
        f"/v1/projects/{pid}/exports/image-sequence", json={"print_ready": True}, headers=MINE
    )
    assert ready.status_code == 202, ready.text
    assert client.get(f"/jobs/{ready.json()['job_id']}", headers=MINE).status_code == 200
    odd = {"print_ready": True, "dpi": 600}
    assert (
        client.post(
            f"/v1/projects/{pid}/exports/image-sequence", json=odd, headers=MINE
        ).status_code
        == 422
    )
    wrong = client.post(f"/v1/projects/{pid}/exports/pdf", json={"per_page": 3}, headers=MINE)
    assert wrong.status_code == 422
    for method, path, body in (
        ("post", f"/v1/projects/{pid}/exports/pdf", {}),
        ("post", f"/v1/projects/{pid}/exports/image-sequence", None),
        ("get", f"/v1/projects/{pid}/timeline", None),
        ("post", f"/v1/projects/{pid}/timeline:reorder", {"scene_ids": [scene]}),
        ("post", url + ":approve", {}),
        ("post", url + ":reject", {}),
        ("post", url + ":rollback", None),
        ("get", f"/v1/projects/{pid}/images", None),
    ):
        answer = client.request(method, path, json=body, headers=THEIRS)
        assert answer.status_code == 404, (method, path, answer.text)


def test_an_action_path_offers_only_its_own_method(client: TestClient) -> None:
    """``…/{project_id}:generate-all`` and ``…/renders/{render_job_id}:rerender`` are not ids of
    the project's or the render's own routes: another method is a 405 that names POST alone."""
    pid, _ = project(client, [])
    job = "0" * 26
    for path in (f"/v1/projects/{pid}:generate-all", f"/v1/projects/{pid}/renders/{job}:rerender"):
        for method in ("GET", "PATCH"):
            answer = client.request(method, path, headers=MINE)
            assert answer.status_code == 405, (method, path, answer.text)
            assert answer.headers["Allow"] == "POST"


def test_the_generate_all_estimate_counts_what_it_would_make(client: TestClient) -> None:
    """The portraits still needed and a frame per scene, each at its time (configured until a
    job of its kind is measured); another client's project is a 404."""
    pid, _ = project(client, ASSETS)
    answer = client.get(f"/v1/projects/{pid}/generate-all/estimate", headers=MINE)
    assert answer.status_code == 200, answer.text
    stages = answer.json()["stages"]
    assert stages["portrait"]["count"] == 1  # Marco: unlocked, no image yet
    assert stages["frame"]["count"] == 0  # no script yet
    assert stages["portrait"]["basis"] == "configured"
    assert answer.json()["estimated_s"] >= stages["portrait"]["per_item_s"]
    other = client.get(f"/v1/projects/{pid}/generate-all/estimate", headers=THEIRS)
    assert other.status_code == 404 and "request_id" in other.json()
