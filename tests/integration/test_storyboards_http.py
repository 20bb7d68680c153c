"""Storyboards over HTTP on the shared graph, with two API keys: a script compiled against a
project's locked assets, a scene rendered by a scene_render job through the consistency gate
(the tiny model draws no face: the frame is needs_review with its report), approved as an
audited exception, and exported as a PDF sheet and a zip whose manifest matches its files;
every new route of one client's project is a 404 for the other. One frame is rendered."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import pytest
from job_client import locked_project, wait
from pypdf import PdfReader
from shared_graph import OTHER_KEY
from soul_client import Graph

from serve_app.stories.exports import verify_sequence

pytestmark = pytest.mark.integration
THEIRS = {"Authorization": f"Bearer {OTHER_KEY}"}
SCRIPT = """Title: Harbor

EXT. HARBOR - DAY

[[Camera: medium shot]]

Nova waves at the boats.

NOVA
Ahoy!
"""
ASSETS = [
    {"asset_type": "character", "name": "Nova", "canonical_prompt": "a sailor", "seed": 3},
    {"asset_type": "environment", "name": "Harbor", "canonical_prompt": "a harbor", "seed": 4},
]


@pytest.fixture(scope="module")
def board(graph: Graph) -> dict[str, Any]:
    """A project with Nova and the harbor (one image each, locked), the script compiled and
    its scene rendered once."""
    pid = locked_project(graph, "Board", ASSETS)
    sent = graph.client.post(f"/v1/projects/{pid}/scripts", json={"raw_text": SCRIPT})
    assert sent.status_code == 201, sent.text
    script_id = sent.json()["script_id"]
    compiled = graph.client.post(f"/v1/projects/{pid}/scripts/{script_id}:compile")
    assert compiled.status_code == 200, compiled.text
    scene = compiled.json()["scenes"][0]
    render = graph.client.post(f"/v1/projects/{pid}/scenes/{scene['scene_id']}/renders", json={})
    assert render.status_code == 202, render.text
    job_id = render.json()["job_id"]
    wait(graph, job_id)
    return {"project_id": pid, "script_id": script_id, "scene": scene, "job_id": job_id}


def test_a_script_goes_to_an_approved_exported_storyboard(
    graph: Graph, board: dict[str, Any]
) -> None:
    pid, scene = board["project_id"], board["scene"]
    assert [c["pin"] is not None for c in scene["graph"]["characters"]] == [True]
    checked = graph.client.post(f"/v1/projects/{pid}/scenes/{scene['scene_id']}:validate")
    assert checked.json()["renderable"], checked.text
    job = graph.client.get(f"/v1/projects/{pid}/renders/{board['job_id']}").json()
    assert job["status"] == "succeeded", job["error"]
    (frame,) = job["result"]["frames"]
    assert frame["status"] == "needs_review"  # the tiny model's frame shows no face
    report = frame["consistency_report"]
    assert not report["passed"] and report["failed"][0].startswith("identity:")
    assert {c["check"] for c in report["checks"] if c["passed"]} >= {"prompt", "seed"}
    assert graph.client.get(frame["url"]).content.startswith(b"\x89PNG")
    approved = graph.client.post(
        f"/v1/projects/{pid}/frames/{frame['frame_id']}:approve", json={"note": "tiny model"}
    )
    assert approved.status_code == 200 and approved.json()["approved_version"] == 1
    events = graph.client.get(f"/v1/projects/{pid}/events?limit=200").json()["events"]
    assert "frame.exception_approved" in [e["kind"] for e in events]
    line = graph.client.get(f"/v1/projects/{pid}/timeline").json()["scenes"]
    assert [f["shown"]["status"] for f in line[0]["frames"]] == ["approved"]
    pdf = exported(graph, f"/v1/projects/{pid}/exports/pdf", {"per_page": 1}, ".pdf")
    reader = PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == 2 and "Ahoy!" in reader.pages[1].extract_text()
    data = exported(graph, f"/v1/projects/{pid}/exports/image-sequence", None, ".zip")
    assert verify_sequence(data) == []
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert len([n for n in archive.namelist() if n.startswith("frames/")]) == 1
    assert any(k.startswith(f"proj/{pid}/exports/") for k in graph.objects(f"proj/{pid}/"))


def exported(graph: Graph, url: str, body: dict[str, Any] | None, ending: str) -> bytes:
    accepted = graph.client.post(url, json=body)
    assert accepted.status_code == 202, accepted.text
    job = wait(graph, accepted.json()["job_id"])
    assert job["status"] == "succeeded", job["error"]
    signed = job["result"]["url"]
    assert signed.split("?")[0].endswith(ending)
    got = graph.client.get(signed)
    assert got.status_code == 200
    return got.content


def test_every_storyboard_route_is_a_404_for_another_key(
    graph: Graph, board: dict[str, Any]
) -> None:
    pid, scene = board["project_id"], board["scene"]["scene_id"]
    script = f"/v1/projects/{pid}/scripts/{board['script_id']}"
    frame = f"/v1/projects/{pid}/frames/frm_{scene[4:]}_00"
    calls = [
        ("POST", f"/v1/projects/{pid}/scripts", {"raw_text": SCRIPT}),
        ("GET", script, None),
        ("POST", script + ":compile", None),
        ("GET", f"/v1/projects/{pid}/scenes/{scene}", None),
        ("POST", f"/v1/projects/{pid}/scenes/{scene}:validate", None),
        ("POST", f"/v1/projects/{pid}/scenes/{scene}/renders", {}),
        ("GET", f"/v1/projects/{pid}/renders/{board['job_id']}", None),
        ("POST", f"/v1/projects/{pid}/renders/{board['job_id']}:rerender", {}),
        ("GET", f"/v1/projects/{pid}/timeline", None),
        ("POST", f"/v1/projects/{pid}/timeline:reorder", {"scene_ids": [scene]}),
        ("POST", frame + ":approve", {}),
        ("POST", frame + ":reject", {}),
        ("POST", frame + ":rollback", None),
        ("GET", f"/v1/projects/{pid}/images", None),
        ("POST", f"/v1/projects/{pid}/exports/pdf", {}),
        ("POST", f"/v1/projects/{pid}/exports/image-sequence", None),
        ("POST", f"/v1/projects/{pid}:generate-all", None),
    ]
    for method, url, body in calls:
        answer = graph.client.request(method, url, json=body, headers=THEIRS)
        assert answer.status_code == 404, (method, url, answer.text)
