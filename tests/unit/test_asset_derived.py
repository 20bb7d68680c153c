"""Images derived from an asset version (a character's portraits) on both backends: kept as
images of the version without changing it (a locked one included), a repeat adds no row and
no event, listed as the project's portraits with their thumbnails, inside one project only;
and the plans of its reads (primary-key prefixes)."""

from __future__ import annotations

import pytest

from serve_app.catalog.asset_derived import DerivedImages
from serve_app.catalog.projects import Projects
from serve_app.catalog.timeline import Timeline
from serve_app.projects.derived import DerivedImage, DerivedRole
from serve_app.projects.models import AssetNotFound, AssetSpec, ProjectDraft, ProjectNotFound
from serve_app.storage.tables import CatalogStore
from tests.support import run
from tests.unit.test_facets import alone, postgres_url, store  # noqa: F401 (fixtures)
from tests.unit.test_store import (
    assert_uses_primary_key,
    query_plan,
    statements_of,
    write_analyzed,
)

ME, OTHER = "client-a", "client-b"
NOVA = AssetSpec(asset_type="character", name="Nova", canonical_prompt="a penguin pilot")


class Catalog(Projects, Timeline, DerivedImages):
    """The facets as the Catalog mixes them."""


@pytest.fixture
def catalog(store: CatalogStore) -> Catalog:  # noqa: F811 (test_facets' fixture)
    return alone(Catalog, store)


def portraits(pid: str, aid: str, version: int, job_id: str = "job1") -> list[DerivedImage]:
    """A portrait job's two images of the version, as the job keeps them."""
    prefix = f"proj/{pid}/asset/{aid}/v{version}/portrait"
    made: tuple[tuple[DerivedRole, str, int, int | None], ...] = (
        ("portrait", ".png", 1024, None),
        ("portrait_print", ".print.2048x2048.png", 2048, 300),
    )
    return [
        DerivedImage(
            project_id=pid,
            asset_id=aid,
            version=version,
            role=role,
            storage_key=prefix + suffix,
            thumbnail_key=f"{prefix}.thumb.png",
            width=side,
            height=side,
            label=f"{side}x{side}",
            dpi=dpi,
            job_id=job_id,
        )
        for role, suffix, side, dpi in made
    ]


def test_portraits_are_images_of_a_locked_version_kept_once(catalog: Catalog) -> None:
    pid = run(catalog.create_project(ME, ProjectDraft(name="P"))).project_id
    asset, _ = run(catalog.create_asset(ME, pid, NOVA, ["front"], None))
    aid = asset.asset_id
    run(catalog.add_asset_image(ME, pid, aid, 1, "front", "proj/front.png", {"seed": 1}))
    locked = run(catalog.lock_asset(ME, pid, aid, 1))
    made = run(catalog.add_derived_images(ME, pid, aid, 1, portraits(pid, aid, 1)))
    assert [d.role for d in made] == ["portrait", "portrait_print"]
    assert run(catalog.get_asset_version(ME, pid, aid, 1)) == locked  # its record: unchanged
    kept = run(catalog.derived_images(ME, pid, aid, 1))
    assert [(d.role, d.width, d.dpi) for d in kept] == [
        ("portrait", 1024, None),
        ("portrait_print", 2048, 300),
    ]
    # A repeated job (another job id, the same images) adds no row and no event.
    events = run(catalog.project_events(ME, pid, "", 100))
    assert [e.kind for e in events].count("version.derived") == 1
    assert run(catalog.add_derived_images(ME, pid, aid, 1, portraits(pid, aid, 1, "job2"))) == []
    assert run(catalog.derived_images(ME, pid, aid, None)) == kept
    assert run(catalog.project_events(ME, pid, "", 100)) == events
    # The project's portraits are these, with their thumbnails; a version's front image is not.
    listed = run(catalog.project_images(ME, pid, "portrait", aid, None))
    assert [(i["role"], i["storage_key"], i["thumbnail_key"]) for i in listed] == [
        (d.role, d.storage_key, d.thumbnail_key) for d in kept
    ]
    assert run(catalog.project_images(ME, pid, None, None, None)) == listed
    other_character, _ = run(catalog.create_asset(ME, pid, NOVA, ["front"], None))
    assert run(catalog.project_images(ME, pid, "portrait", other_character.asset_id, None)) == []


def test_derived_images_stay_inside_their_project(catalog: Catalog) -> None:
    pid = run(catalog.create_project(ME, ProjectDraft(name="P"))).project_id
    aid = run(catalog.create_asset(ME, pid, NOVA, ["front"], None))[0].asset_id
    theirs = run(catalog.create_project(OTHER, ProjectDraft(name="P"))).project_id
    for call in (
        catalog.add_derived_images(OTHER, pid, aid, 1, portraits(pid, aid, 1)),
        catalog.derived_images(OTHER, pid, aid),
        catalog.project_images(OTHER, pid, "portrait", None, None),
    ):
        with pytest.raises(ProjectNotFound, match="project_id"):
            run(call)
    with pytest.raises(AssetNotFound, match="version 2"):
        run(catalog.add_derived_images(ME, pid, aid, 2, portraits(pid, aid, 2)))
    with pytest.raises(AssetNotFound):  # an asset of another project, named under one's own
        run(catalog.add_derived_images(OTHER, theirs, aid, 1, portraits(theirs, aid, 1)))
    assert run(catalog.derived_images(ME, pid, aid)) == []
    assert run(catalog.store.derived_images(theirs)) == []


def test_derived_images_are_read_by_primary_key_prefixes(catalog: Catalog) -> None:
    """1,000 projects with 10 characters of 2 portraits each, written in bulk and analyzed."""
    db = catalog.store
    rows = [
        (f"prj_{p:026d}", f"ast_{a:026d}", 1, role, "k", "t", 8, 8, "8x8", None, "j", 1)
        for p in range(1000)
        for a in range(10)
        for role in ("portrait", "portrait_print")
    ]
    sql = "INSERT INTO asset_derived_image VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    write_analyzed(db, [(sql, rows)])
    pid, aid = str(rows[500 * 20][0]), str(rows[500 * 20][1])
    for call in (
        db.derived_images(pid),
        db.derived_images(pid, aid),
        db.derived_images(pid, aid, 1),
    ):
        for statement, params in statements_of(db, call):
            assert_uses_primary_key(db, query_plan(db, statement, params), "asset_derived_image")
    assert len(run(db.derived_images(pid))) == 20
    assert len(run(db.derived_images(pid, aid, 1))) == 2
