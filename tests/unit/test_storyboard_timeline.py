"""The timeline facet over a real store, on both backends: scenes in order (and reordered),
frames with the version each shows; approving a needs_review version records an audited
exception; reject; rollback to the approved version before; the project's images by type,
character and scene; another client's project is not found."""

from __future__ import annotations

from typing import Any

import pytest

from serve_app.catalog.asset_search import AssetSearch
from serve_app.catalog.frames import MAX_ERROR_CHARS, TooManyRerenders
from serve_app.catalog.projects import Projects
from serve_app.catalog.timeline import NotDecidable, Timeline
from serve_app.errors import InvalidRequest
from serve_app.ids import new_ulid
from serve_app.projects.models import ProjectNotFound
from serve_app.storage.tables import CatalogStore
from serve_app.stories.records import MAX_VERSIONS, ScriptDraft
from tests.support import run
from tests.unit.test_facets import alone, postgres_url, store  # noqa: F401 (fixtures)
from tests.unit.test_store import assert_uses_primary_key, query_plan, write_analyzed
from tests.unit.test_storyboard_catalog import ME, OTHER, asset, project

TWO_SCENES = """EXT. LIGHTHOUSE - NIGHT

NOVA
Hello?

EXT. LIGHTHOUSE - DAY

The sea is calm.
"""
PASSED: dict[str, Any] = {"passed": True, "failed": [], "checks": []}
FAILED: dict[str, Any] = {
    "passed": False,
    "failed": ["identity:x"],
    "checks": [{"check": "identity", "passed": False}],
}


class Storyboards(Projects, AssetSearch, Timeline):
    """The facets as the Catalog mixes them."""


@pytest.fixture
def facet(store: CatalogStore) -> Storyboards:  # noqa: F811 (test_facets' fixture)
    return alone(Storyboards, store)


def compiled(facet: Storyboards) -> tuple[str, str, list[str]]:
    pid = project(facet)  # type: ignore[arg-type]
    nova = asset(facet, pid, "character", "Nova")  # type: ignore[arg-type]
    asset(facet, pid, "environment", "Lighthouse")  # type: ignore[arg-type]
    script = run(facet.create_script(ME, pid, ScriptDraft(raw_text=TWO_SCENES)))
    _, scenes = run(facet.compile_script(ME, pid, script.script_id))
    return pid, nova, [s.scene_id for s in scenes]


def rendered(facet: Storyboards, pid: str, scene_id: str, report: dict[str, Any]) -> str:
    (version,) = run(facet.plan_frames(ME, pid, scene_id, [0]))
    key = f"proj/{pid}/frames/{version.frame_id}/v{version.render_version}.png"
    run(facet.record_frame(ME, pid, version.frame_id, version.render_version, key, report))
    return version.frame_id


def test_decisions_rollback_and_the_exception_log(facet: Storyboards) -> None:
    pid, _, (talk, calm) = compiled(facet)
    frame = rendered(facet, pid, talk, FAILED)
    assert run(facet.get_frame_version(ME, pid, frame, 1)).status == "needs_review"
    shown, version = run(facet.decide_frame(ME, pid, frame, "approve", None, "looks fine"))
    assert (shown.approved_version, version.status) == (1, "approved")
    events = run(facet.project_events(ME, pid, "", 200))
    (exception,) = [e for e in events if e.kind == "frame.exception_approved"]
    assert exception.who == ME and exception.payload["note"] == "looks fine"
    assert exception.payload["failed"] == ["identity:x"] and exception.payload["report"] == FAILED
    rendered(facet, pid, talk, PASSED)  # version 2, shown now
    assert run(facet.get_frame(ME, pid, frame)).current_version == 2
    run(facet.decide_frame(ME, pid, frame, "approve", None, ""))
    assert [e.kind for e in run(facet.project_events(ME, pid, "", 200))].count(
        "frame.exception_approved"
    ) == 1  # a passed version's approval is no exception
    shown, back = run(facet.rollback_frame(ME, pid, frame))
    assert (shown.current_version, shown.approved_version, back.render_version) == (1, 1, 1)
    with pytest.raises(NotDecidable):
        run(facet.rollback_frame(ME, pid, frame))
    shown, rejected = run(facet.decide_frame(ME, pid, frame, "reject", 1, "no"))
    assert rejected.status == "rejected" and shown.approved_version is None
    (planned,) = run(facet.plan_frames(ME, pid, calm, [0]))
    with pytest.raises(NotDecidable, match="no rendered version"):
        run(facet.decide_frame(ME, pid, planned.frame_id, "approve", None, ""))
    with pytest.raises(NotDecidable, match="rendering"):
        run(facet.decide_frame(ME, pid, planned.frame_id, "approve", 1, ""))


def test_a_failed_render_keeps_the_frame_on_its_version_and_its_allowance(
    facet: Storyboards,
) -> None:
    pid, _, (talk, _) = compiled(facet)
    frame = rendered(facet, pid, talk, PASSED)  # version 1, shown
    (second,) = run(facet.plan_frames(ME, pid, talk, [0]))
    failed = run(facet.fail_frame(ME, pid, frame, 2, "RenderFailed: out of memory"))
    assert failed is not None and (failed.status, failed.error) == ("failed", failed.error)
    stored = run(facet.get_frame_version(ME, pid, frame, 2))
    assert (stored.status, stored.error) == ("failed", "RenderFailed: out of memory")
    assert run(facet.get_frame(ME, pid, frame)).current_version == 1
    assert run(facet.fail_frame(ME, pid, frame, 2, "again")) is None  # only from rendering
    assert run(facet.fail_frame(ME, pid, frame, 1, "late")) is None  # a rendered one stays
    assert run(facet.get_frame_version(ME, pid, frame, 1)).status == "passed"
    ((_, [line]), _) = run(facet.timeline(ME, pid))
    assert line.shown is not None and line.shown.render_version == 1
    assert line.newest is not None and (line.newest.status, line.newest.error) == (
        "failed",
        "RenderFailed: out of memory",
    )
    failed_events = [
        e for e in run(facet.project_events(ME, pid, "", 200)) if e.kind == "frame.failed"
    ]
    assert [e.payload["render_version"] for e in failed_events] == [2]
    # A failed version does not use up the allowance: five re-renders that did not fail.
    for n in range(5):
        (planned,) = run(facet.plan_frames(ME, pid, talk, [0]))
        assert planned.render_version == 3 + n
    with pytest.raises(TooManyRerenders, match="5 times"):
        run(facet.plan_frames(ME, pid, talk, [0]))
    assert second.render_version == 2


def test_a_job_planning_again_gets_the_versions_it_did_not_finish(facet: Storyboards) -> None:
    pid, _, (talk, calm) = compiled(facet)
    job, other = new_ulid(), new_ulid()
    first = run(facet.plan_frames(ME, pid, talk, [0, 1], False, job))
    assert [v.planned_by for v in first] == [job, job]
    again = run(facet.plan_frames(ME, pid, talk, [0, 1], False, job))  # its retried attempt
    assert [v.render_version for v in again] == [1, 1] and again == first
    frame = first[0].frame_id
    assert len(run(facet.frame_versions(ME, pid, frame))) == 1
    key = f"proj/{pid}/frames/{frame}/v1.png"
    run(facet.record_frame(ME, pid, frame, 1, key, PASSED))  # made: the next plan is new
    (made,) = run(facet.plan_frames(ME, pid, talk, [0], False, job))
    assert made.render_version == 2
    (by_other,) = run(facet.plan_frames(ME, pid, talk, [1], False, other))  # another job's
    (by_route,) = run(facet.plan_frames(ME, pid, calm, [0]))  # a route's: never reused
    assert (by_other.render_version, by_other.planned_by) == (2, other)
    assert run(facet.plan_frames(ME, pid, calm, [0]))[0].render_version == 2
    assert by_route.planned_by is None


def test_a_frame_keeps_at_most_max_versions_failed_ones_too(facet: Storyboards) -> None:
    pid, _, (talk, _) = compiled(facet)
    for n in range(MAX_VERSIONS):
        (planned,) = run(facet.plan_frames(ME, pid, talk, [0]))
        error = f"try {n}: " + "a long traceback " * 100
        run(facet.fail_frame(ME, pid, planned.frame_id, planned.render_version, error))
    with pytest.raises(TooManyRerenders, match=f"{MAX_VERSIONS} versions"):
        run(facet.plan_frames(ME, pid, talk, [0]))
    assert run(facet.get_frame(ME, pid, planned.frame_id)).current_version == 0
    # Each failure's error is kept to its first MAX_ERROR_CHARS, in the version and the log alike.
    last = run(facet.get_frame_version(ME, pid, planned.frame_id, planned.render_version))
    events = [e for e in run(facet.project_events(ME, pid, "", 200)) if e.kind == "frame.failed"]
    errors = {len(e.payload["error"]) for e in events} | {len(last.error or "")}
    assert len(events) == MAX_VERSIONS and errors == {MAX_ERROR_CHARS}


def test_the_timeline_orders_scenes_and_lists_images(facet: Storyboards) -> None:
    pid, nova, (talk, calm) = compiled(facet)
    frame = rendered(facet, pid, talk, PASSED)
    rendered(facet, pid, calm, PASSED)
    order = [s.scene_id for s, _ in run(facet.timeline(ME, pid))]
    assert order == [talk, calm]
    run(facet.reorder_timeline(ME, pid, [calm, talk]))
    line = run(facet.timeline(ME, pid))
    assert [s.scene_id for s, _ in line] == [calm, talk]
    ((_, shown, _),) = line[1][1]
    assert shown is not None and shown.frame_id == frame and shown.status == "passed"
    script = run(facet.get_scene(ME, pid, calm)).script_id
    shorter = run(facet.get_script(ME, pid, script)).model_copy(update={"scene_ids": [talk]})
    run(facet.store.put_script(shorter.model_copy(update={"updated_at_ts": 2**42})))
    assert [s.scene_id for s, _ in run(facet.timeline(ME, pid))] == [talk]  # calm: left behind
    run(
        facet.store.put_script(
            shorter.model_copy(update={"scene_ids": [talk, calm], "updated_at_ts": 2**43})
        )
    )
    for wrong in ([calm], [calm, talk, talk], [calm, "scn_" + "0" * 26 + "_001"]):
        with pytest.raises(InvalidRequest, match="scene_ids"):
            run(facet.reorder_timeline(ME, pid, wrong))
    scenes = run(facet.project_images(ME, pid, "scene", None, None))
    assert [i["scene_id"] for i in scenes] == [calm, talk]
    assert [i["frame_id"] for i in run(facet.project_images(ME, pid, None, nova, None))] == [frame]
    assert run(facet.project_images(ME, pid, "scene", None, calm))[0]["scene_id"] == calm
    assert run(facet.project_images(ME, pid, "portrait", None, None)) == []  # none rendered
    for call in (
        facet.timeline(OTHER, pid),
        facet.reorder_timeline(OTHER, pid, [calm, talk]),
        facet.decide_frame(OTHER, pid, frame, "approve", None, ""),
        facet.rollback_frame(OTHER, pid, frame),
        facet.project_images(OTHER, pid, None, None, None),
    ):
        with pytest.raises(ProjectNotFound):
            run(call)


def test_plans_read_one_project_by_its_primary_keys(facet: Storyboards) -> None:
    """2,000 projects' storyboard rows written in bulk and analyzed: each read the table module
    makes (its statements, as written there) is a primary-key search inside one project."""
    db = facet.store
    rows: dict[str, list[tuple[object, ...]]] = {k: [] for k in ("s", "c", "f", "v")}
    for _ in range(2000):
        pid = f"prj_{new_ulid().lower()}"
        sid = f"scr_{new_ulid().lower()}"
        rows["s"].append((pid, sid, "", "x", "fountain", "compiled", "h", "c", "[]", 1, 1))
        for c in range(5):
            scene = f"scn_{sid[4:]}_{c + 1:03d}"
            rows["c"].append((pid, scene, sid, c, "{}", "h", "c", 1, 1))
            frame = f"frm_{scene[4:]}_00"
            rows["f"].append((pid, frame, scene, 0, 2, None, 1, 1))
            for v in (1, 2):
                rows["v"].append((pid, frame, v, "passed", "{}", None, None, 1, 1))
    statements = {
        "s": "INSERT INTO script VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "c": "INSERT INTO scene VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "f": "INSERT INTO frame VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        "v": "INSERT INTO frame_version (project_id, frame_id, render_version, status, body_json, "
        "consistency_report_json, image_key, created_at_ts, updated_at_ts) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    }
    write_analyzed(db, [(sql, rows[k]) for k, sql in statements.items()])
    pid, sid = str(rows["s"][7][0]), str(rows["s"][7][1])
    scene, frame = str(rows["c"][35][1]), str(rows["f"][35][1])
    for sql, params, table in (
        ("SELECT * FROM script WHERE project_id = ? AND script_id = ?", (pid, sid), "script"),
        ("SELECT * FROM scene WHERE project_id = ? AND scene_id = ?", (pid, scene), "scene"),
        ("SELECT * FROM scene WHERE project_id = ? ORDER BY scene_id", (pid,), "scene"),
        ("SELECT * FROM frame WHERE project_id = ? AND frame_id = ?", (pid, frame), "frame"),
        ("SELECT * FROM frame WHERE project_id = ? ORDER BY frame_id", (pid,), "frame"),
        (
            "SELECT * FROM frame_version WHERE project_id = ? AND frame_id = ? "
            "ORDER BY render_version",
            (pid, frame),
            "frame_version",
        ),
    ):
        assert_uses_primary_key(db, query_plan(db, sql, params), table)
