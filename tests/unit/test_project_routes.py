"""The project routes over the real Catalog engine (SQLite), the real Embedder and a local
object store, without Ray: projects of one API client, assets made from JSON or YAML specs
(refused specs write nothing), versions, locks, the event log, search by meaning; every route of
a project answers 404 to another client."""

from __future__ import annotations

import json
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
from tests.unit.test_asset_derived import portraits

MINE, THEIRS = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
YAML = {**MINE, "Content-Type": "application/yaml"}
LIGHTHOUSE = {
    "asset_type": "environment",
    "name": "Lighthouse",
    "tags": ["coast"],
    "canonical_prompt": "a red brick lighthouse on a rocky sea cliff",
    "seed": 3,
}


@pytest.fixture
def client(tmp_path: Path, embedder: LocalHandle) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path)
    engine = CatalogEngine(SQLiteStore(tmp_path / "catalog.db"))
    run(engine.start(load_souls("config/souls.yaml")))
    with ingress_client(settings, engine, embedder) as made:
        yield made
    run(engine.close())


def project(client: TestClient, **fields: Any) -> str:
    made = client.post("/v1/projects", json={"name": "College Silence", **fields}, headers=MINE)
    assert made.status_code == 201, made.text
    return str(made.json()["project_id"])


def generate(client: TestClient, pid: str, spec: dict[str, Any]) -> dict[str, Any]:
    made = client.post(f"/v1/projects/{pid}/assets:generate", json=spec, headers=MINE)
    assert made.status_code == 202, made.text
    body: dict[str, Any] = made.json()
    return body


def test_projects_are_made_read_patched_and_paged(client: TestClient) -> None:
    pid = project(client, style_anchor_prompt="soft contrast", default_sampler="DPM++")
    got = client.get(f"/v1/projects/{pid}", headers=MINE).json()
    assert (got["status"], got["default_sampler"]) == ("active", "DPM++") and "owner" not in got
    patched = client.patch(f"/v1/projects/{pid}", json={"status": "archived"}, headers=MINE)
    assert patched.json()["status"] == "archived"
    assert patched.json()["style_anchor_prompt"] == "soft contrast"
    second = project(client)
    page = client.get("/v1/projects?limit=1", headers=MINE).json()
    assert [p["project_id"] for p in page["projects"]] == [pid] and page["next_after"] == pid
    rest = client.get(f"/v1/projects?after={pid}", headers=MINE).json()
    assert [p["project_id"] for p in rest["projects"]] == [second]
    assert client.get("/v1/projects", headers=THEIRS).json()["projects"] == []
    refused = generate_status(client, pid, LIGHTHOUSE)
    assert refused == 409  # archived
    defaults = {"environment_strength": 0.6, "prop_strength": 0.5, "scenery_strength": 0.3}
    assert got["composition"] == defaults
    softer = {"composition": {**defaults, "environment_strength": 0.35, "prop_strength": 0.7}}
    patched = client.patch(f"/v1/projects/{pid}", json=softer, headers=MINE)
    assert patched.json()["composition"] == softer["composition"]
    for field, value in (("environment_strength", 0), ("prop_strength", 1.5)):
        too_far = {"composition": {field: value}}
        bad = client.patch(f"/v1/projects/{pid}", json=too_far, headers=MINE)
        assert bad.status_code == 422 and field in bad.text
    kept = client.get(f"/v1/projects/{pid}", headers=MINE).json()["composition"]
    assert kept == softer["composition"]

    # A whole number of days, as JSON may write it (30.0 too); not a boolean, text or a fraction.
    kept_for = client.patch(
        f"/v1/projects/{pid}", json={"policy": {"retention_days": 30.0}}, headers=MINE
    )
    assert kept_for.json()["policy"]["retention_days"] == 30
    for days in (True, "30", 1.5, 0):
        bad = client.patch(
            f"/v1/projects/{pid}", json={"policy": {"retention_days": days}}, headers=MINE
        )
        assert bad.status_code == 422 and "retention_days" in bad.text
    assert client.get(f"/v1/projects/{pid}", headers=MINE).json()["policy"]["retention_days"] == 30


def generate_status(client: TestClient, pid: str, spec: dict[str, Any]) -> int:
    return client.post(f"/v1/projects/{pid}/assets:generate", json=spec, headers=MINE).status_code


def test_an_asset_is_generated_versioned_locked_and_logged(client: TestClient) -> None:
    pid = project(client)
    made = generate(client, pid, LIGHTHOUSE)
    asset, job = made["asset"], made["job"]
    aid = asset["asset_id"]
    assert job["status"] == "queued" and asset["version"]["version"] == 1
    assert asset["version"]["roles"] == ["wide", "detail"] and asset["version"]["seed_bank"] == [3]
    queued = client.get(f"/jobs/{job['job_id']}", headers=MINE).json()
    assert (queued["kind"], queued["soul_id"], queued["progress"]["total"]) == (
        "asset_generate",
        pid,
        2,
    )
    url = f"/v1/projects/{pid}/assets/{aid}"
    second = client.post(
        url + ":version",
        json={"metadata": {"time_of_day": "dusk"}, "change_note": "dusk"},
        headers=MINE,
    )
    assert second.status_code == 202, second.text
    v2 = second.json()["asset"]["version"]
    assert (v2["version"], v2["parent"], v2["metadata"]) == (2, 1, {"time_of_day": "dusk"})
    locked = client.post(url + ":lock?version=1", headers=MINE).json()
    assert locked["version"]["is_locked"] and locked["version"]["version"] == 1
    assert [v["is_locked"] for v in locked["versions"]] == [True, False]
    assert client.post(url + ":lock?version=1", headers=MINE).status_code == 409
    assert client.get(url, headers=MINE).json()["version"]["version"] == 2
    assert client.get(url + "?version=1", headers=MINE).json()["version"]["is_locked"]
    assert client.get(url + "?version=3", headers=MINE).status_code == 404
    assert not client.post(url + ":unlock?version=1", headers=MINE).json()["version"]["is_locked"]
    assert client.post(url + ":unlock?version=1", headers=MINE).status_code == 409
    events = client.get(f"/v1/projects/{pid}/events?limit=3", headers=MINE).json()
    assert [e["kind"] for e in events["events"]] == [
        "project.created",
        "asset.created",
        "version.created",
    ]
    rest = client.get(f"/v1/projects/{pid}/events?after={events['next_after']}", headers=MINE)
    assert [e["kind"] for e in rest.json()["events"]] == ["version.locked", "version.unlocked"]


def test_a_yaml_spec_is_a_json_spec(client: TestClient) -> None:
    pid = project(client)
    body = "asset_type: character\nname: Protagonist_A\nidentity:\n  hair_colour: black\n"
    made = client.post(f"/v1/projects/{pid}/assets:generate", content=body, headers=YAML)
    assert made.status_code == 202, made.text
    version = made.json()["asset"]["version"]
    assert version["canonical_prompt"] == "black hair" and len(version["roles"]) == 6


@pytest.mark.parametrize(
    ("body", "content_type", "field"),
    [
        ('{"asset_type": "vehicle", "name": "x", "canonical_prompt": "p"}', "json", "asset_type"),
        ('{"asset_type": "prop", "name": "x"}', "json", "canonical_prompt"),
        ("- asset_type: prop\n- name: x\n", "yaml", "body: an asset spec is a mapping"),
        ("asset_type: [prop\n", "yaml", "body: not YAML"),
        ("a: &x [1]\nb: *x\n", "yaml", "aliases"),
        ("asset_type: prop\nname: x\ncanonical_prompt: p\nroles: [Front]\n", "yaml", "roles.0"),
        ("{}", "text/plain", "application/yaml"),
        (
            "asset_type: prop\nname: x\ncanonical_prompt: p\ntaxonomy: {Era: x}\n",
            "yaml",
            "taxonomy.Era",
        ),
        (
            json.dumps(
                {
                    "asset_type": "prop",
                    "name": "x",
                    "canonical_prompt": "p",
                    "taxonomy": {f"k{i}": "v" for i in range(17)},
                }
            ),
            "json",
            "taxonomy",
        ),
    ],
)
def test_a_refused_spec_names_the_field_and_writes_nothing(
    client: TestClient, body: str, content_type: str, field: str
) -> None:
    pid = project(client)
    kind = {"json": "application/json", "yaml": "application/yaml"}.get(content_type, content_type)
    refused = client.post(
        f"/v1/projects/{pid}/assets:generate",
        content=body,
        headers={**MINE, "Content-Type": kind},
    )
    assert refused.status_code == 422, refused.text
    assert field in refused.json()["detail"] and refused.json()["request_id"] is not None
    events = client.get(f"/v1/projects/{pid}/events", headers=MINE).json()["events"]
    assert [e["kind"] for e in events] == ["project.created"]
    assert client.get("/jobs", headers=MINE).json()["jobs"] == []


def test_a_client_over_its_job_quota_gets_a_429_and_no_asset_is_written(
    client: TestClient,
) -> None:
    client.app.state.services.settings.jobs.job_queued_quota = 1  # type: ignore[attr-defined]
    pid = project(client)
    first = generate(client, pid, LIGHTHOUSE)
    refused = client.post(
        f"/v1/projects/{pid}/assets:generate", json={**LIGHTHOUSE, "name": "Pier"}, headers=MINE
    )
    assert refused.status_code == 429 and "quota" in refused.json()["detail"], refused.text
    again = client.post(
        f"/v1/projects/{pid}/assets/{first['asset']['asset_id']}:version", json={}, headers=MINE
    )
    assert again.status_code == 429, again.text
    events = client.get(f"/v1/projects/{pid}/events", headers=MINE).json()["events"]
    assert [e["kind"] for e in events].count("asset.created") == 1
    assert all(e["kind"] != "asset.versioned" for e in events)
    assert len(client.get("/jobs", headers=MINE).json()["jobs"]) == 1


def test_search_ranks_by_meaning_inside_the_project(client: TestClient) -> None:
    pid, other = project(client), project(client)
    for name, prompt, kind in (
        ("Boat", "a small wooden rowing boat", "prop"),
        ("Lighthouse", "a red brick lighthouse on a rocky sea cliff", "environment"),
        ("Forest", "a snowy pine forest at dawn", "nature"),
    ):
        generate(client, pid, {"asset_type": kind, "name": name, "canonical_prompt": prompt})
    generate(client, other, {**LIGHTHOUSE, "name": "Elsewhere"})
    url = f"/v1/projects/{pid}/assets:search"
    found = client.post(url, json={"text": "an old lighthouse by the sea"}, headers=MINE).json()
    assert found["hits"][0]["name"] == "Lighthouse"
    assert {h["name"] for h in found["hits"]} == {"Lighthouse", "Boat", "Forest"}
    scores = [h["score"] for h in found["hits"]]
    assert scores == sorted(scores, reverse=True) and found["next_offset"] is None
    typed = client.post(url, json={"asset_type": "nature"}, headers=MINE).json()
    assert [h["name"] for h in typed["hits"]] == ["Forest"] and typed["hits"][0]["score"] is None
    for text, first in (("a boat on a lake", "Boat"), ("trees covered in snow", "Forest")):
        paged = client.post(url, json={"text": text, "limit": 1}, headers=MINE).json()
        assert [h["name"] for h in paged["hits"]] == [first] and paged["next_offset"] == 1


def test_search_filters_by_taxonomy_and_an_asset_shows_its_own(client: TestClient) -> None:
    pid = project(client)
    ids = {}
    for name, taxonomy in (
        ("Fox", {"species": "fox", "role": "sidekick", "era": "1920s"}),
        ("Owl", {"species": "owl", "role": "sidekick"}),
        ("Wolf", {"species": "wolf", "role": "villain", "era": "1920s"}),
    ):
        spec = {"asset_type": "character", "name": name, "canonical_prompt": f"a {name}"}
        made = generate(client, pid, {**spec, "taxonomy": taxonomy})["asset"]
        assert made["version"]["taxonomy"] == taxonomy
        ids[name] = made["asset_id"]
    url = f"/v1/projects/{pid}/assets:search"

    def names(body: dict[str, Any]) -> list[str]:
        found = client.post(url, json=body, headers=MINE)
        assert found.status_code == 200, found.text
        return [h["name"] for h in found.json()["hits"]]

    assert names({"taxonomy": {"era": "1920s"}, "text": "a wolf"}) == ["Wolf", "Fox"]
    assert sorted(names({"taxonomy": {"role": "sidekick"}})) == ["Fox", "Owl"]
    assert names({"taxonomy": {"role": "sidekick", "era": "1920s"}}) == ["Fox"]
    changed = client.post(
        f"/v1/projects/{pid}/assets/{ids['Owl']}:version",
        json={"taxonomy": {"species": "owl", "era": "1920s"}},
        headers=MINE,
    )
    assert changed.status_code == 202, changed.text
    assert sorted(names({"taxonomy": {"era": "1920s"}})) == ["Fox", "Owl", "Wolf"]
    shown = client.get(f"/v1/projects/{pid}/assets/{ids['Owl']}?version=1", headers=MINE).json()
    assert shown["version"]["taxonomy"] == {"species": "owl", "role": "sidekick"}
    before = client.get(f"/v1/projects/{pid}/events", headers=MINE).json()["events"]
    refused = client.post(url, json={"taxonomy": {"role": "x" * 65}}, headers=MINE)
    assert refused.status_code == 422 and "taxonomy.role" in refused.json()["detail"]
    assert client.get(f"/v1/projects/{pid}/events", headers=MINE).json()["events"] == before


def test_every_route_of_a_project_is_a_404_to_another_client(client: TestClient) -> None:
    pid = project(client)
    aid = generate(client, pid, LIGHTHOUSE)["asset"]["asset_id"]
    asset = f"/v1/projects/{pid}/assets/{aid}"
    calls = [
        ("get", f"/v1/projects/{pid}", None),
        ("patch", f"/v1/projects/{pid}", {"name": "mine now"}),
        ("post", f"/v1/projects/{pid}/assets:generate", LIGHTHOUSE),
        ("post", f"/v1/projects/{pid}/assets:search", {"text": "lighthouse"}),
        ("get", asset, None),
        ("post", asset + ":version", {"change_note": "x"}),
        ("post", asset + ":lock", None),
        ("post", asset + ":unlock", None),
        ("post", asset + ":portrait", None),
        ("get", f"/v1/projects/{pid}/events", None),
    ]
    for method, url, body in calls:
        answer = client.request(method, url, json=body, headers=THEIRS)
        assert answer.status_code == 404, (method, url, answer.text)
        assert "project_id" in answer.json()["detail"]
    events = client.get(f"/v1/projects/{pid}/events", headers=MINE).json()["events"]
    assert [e["kind"] for e in events] == ["project.created", "asset.created"]


def test_a_portrait_is_of_a_character_version_with_a_front_image(client: TestClient) -> None:
    pid = project(client)
    lighthouse = generate(client, pid, LIGHTHOUSE)["asset"]["asset_id"]
    nova = {"asset_type": "character", "name": "Nova", "canonical_prompt": "a penguin pilot"}
    character = generate(client, pid, nova)["asset"]["asset_id"]  # its images not rendered yet
    for aid, says in ((lighthouse, "is of type environment"), (character, "has no front image")):
        answer = client.post(f"/v1/projects/{pid}/assets/{aid}:portrait", headers=MINE)
        assert answer.status_code == 409, answer.text
        assert says in answer.json()["detail"]
    later = client.post(f"/v1/projects/{pid}/assets/{character}:portrait?version=2", headers=MINE)
    assert later.status_code == 404, later.text


def test_a_characters_portraits_are_shown_with_its_version_and_listed(client: TestClient) -> None:
    pid = project(client)
    nova = {"asset_type": "character", "name": "Nova", "canonical_prompt": "a penguin pilot"}
    aid = generate(client, pid, nova)["asset"]["asset_id"]
    engine = client.app.state.services.catalog.engine  # type: ignore[attr-defined]
    prefix = f"proj/{pid}/asset/{aid}/v1/portrait"
    made = portraits(pid, aid, 1)
    run(engine.add_derived_images(key_scope("key-a"), pid, aid, 1, made))
    shown = client.get(f"/v1/projects/{pid}/assets/{aid}", headers=MINE).json()["version"]
    assert shown["images"] == {}  # its rendered images by role: none yet
    derived = shown["derived_images"]
    assert sorted(derived) == ["portrait", "portrait_print"]
    assert derived["portrait_print"]["dpi"] == 300 and derived["portrait"]["url"]
    assert derived["portrait"]["thumbnail"]["storage_key"] == prefix + ".thumb.png"
    listed = client.get(
        f"/v1/projects/{pid}/images?type=portrait&character_id={aid}", headers=MINE
    ).json()["images"]
    assert [(i["role"], i["storage_key"]) for i in listed] == [
        ("portrait", prefix + ".png"),
        ("portrait_print", prefix + ".print.2048x2048.png"),
    ]
    assert all(i["url"] and i["thumbnail_url"] and i["character_ids"] == [aid] for i in listed)
    assert client.get(f"/v1/projects/{pid}/images?type=portrait", headers=THEIRS).status_code == 404
