"""The projects facet over a real store, on both backends: projects scoped by their owner,
versions with lineage that a lock freezes, search inside one project, an append-only log; and
the plans of its reads (primary-key searches, each inside one project)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from serve_app.catalog.asset_search import AssetSearch
from serve_app.catalog.projects import Projects
from serve_app.characters.identities import IdentityDescription
from serve_app.ids import new_ulid
from serve_app.projects.models import (
    AssetChanges,
    AssetLocked,
    AssetNotFound,
    AssetNotLocked,
    AssetSpec,
    ProjectArchived,
    ProjectDraft,
    ProjectNotFound,
    ProjectPatch,
    ProjectPolicy,
)
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
ROLES = ["front", "detail"]


class ProjectsAndSearch(Projects, AssetSearch):
    """The two facets as the Catalog mixes them."""


@pytest.fixture
def projects(store: CatalogStore) -> ProjectsAndSearch:  # noqa: F811 (test_facets' fixture)
    return alone(ProjectsAndSearch, store)


def embed(angle_deg: float) -> bytes:
    v = np.zeros(384, dtype=np.float32)
    v[0], v[1] = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return v.tobytes()


def spec(**fields: object) -> AssetSpec:
    given = {"asset_type": "prop", "name": "Backpack", "canonical_prompt": "a red backpack"}
    return AssetSpec.model_validate({**given, **fields})


def test_a_project_is_its_owners_only(projects: ProjectsAndSearch) -> None:
    made = run(projects.create_project(ME, ProjectDraft(name="College Silence")))
    assert made.project_id.startswith("prj_") and made.status == "active"
    assert run(projects.get_project(ME, made.project_id)) == made
    for call in (
        projects.get_project(OTHER, made.project_id),
        projects.patch_project(OTHER, made.project_id, ProjectPatch(name="mine")),
        projects.create_asset(OTHER, made.project_id, spec(), ROLES, None),
        projects.project_events(OTHER, made.project_id, "", 10),
        projects.search_assets(OTHER, made.project_id, None, None, [], 0, 10),
    ):
        with pytest.raises(ProjectNotFound, match="project_id"):
            run(call)
    assert run(projects.list_projects(OTHER, "", 10)) == []
    second = run(projects.create_project(ME, ProjectDraft(name="Second")))
    assert [p.project_id for p in run(projects.list_projects(ME, "", 10))] == [
        made.project_id,
        second.project_id,
    ]
    assert run(projects.list_projects(ME, made.project_id, 10)) == [second]


def test_a_patch_changes_only_what_it_gives_and_an_archived_project_makes_nothing(
    projects: ProjectsAndSearch,
) -> None:
    made = run(projects.create_project(ME, ProjectDraft(name="P", style_anchor_prompt="ink")))
    patched = run(
        projects.patch_project(ME, made.project_id, ProjectPatch(status="archived", name="Q"))
    )
    assert (patched.name, patched.status, patched.style_anchor_prompt) == ("Q", "archived", "ink")
    assert run(projects.get_project(ME, made.project_id)) == patched
    with pytest.raises(ProjectArchived, match="status"):
        run(projects.create_asset(ME, made.project_id, spec(), ROLES, None))


def test_versions_copy_their_parent_and_a_locked_version_refuses_every_change(
    projects: ProjectsAndSearch,
) -> None:
    project = run(projects.create_project(ME, ProjectDraft(name="P", default_sampler="DPM++")))
    pid = project.project_id
    asset, v1 = run(projects.create_asset(ME, pid, spec(seed=7, tags=["gear"]), ROLES, embed(0)))
    assert (v1.version, v1.seed_bank, v1.roles, v1.sampler) == (1, [7], ROLES, "DPM++")
    run(projects.add_asset_image(ME, pid, asset.asset_id, 1, "front", "proj/k.png", {"seed": 7}))
    locked = run(projects.lock_asset(ME, pid, asset.asset_id, None))
    assert locked.is_locked and locked.images == {"front": "proj/k.png"}
    with pytest.raises(AssetLocked):
        run(projects.add_asset_image(ME, pid, asset.asset_id, 1, "detail", "x", {}))
    with pytest.raises(AssetLocked):
        run(projects.lock_asset(ME, pid, asset.asset_id, 1))
    changes = AssetChanges(metadata={"season": "winter"}, change_note="winter")
    v2 = run(projects.new_asset_version(ME, pid, asset.asset_id, changes, None))
    assert (v2.version, v2.parent, v2.is_locked, v2.images) == (2, 1, False, {})
    assert (v2.canonical_prompt, v2.seed_bank, v2.metadata) == (
        "a red backpack",
        [7],
        changes.metadata,
    )
    _, versions = run(projects.get_asset(ME, pid, asset.asset_id))
    assert [v.version for v in versions] == [1, 2] and versions[0] == locked
    assert run(projects.get_asset_version(ME, pid, asset.asset_id, 1)) == locked
    unlocked = run(projects.unlock_asset(ME, pid, asset.asset_id, 1))
    assert not unlocked.is_locked
    with pytest.raises(AssetNotLocked):
        run(projects.unlock_asset(ME, pid, asset.asset_id, 1))
    with pytest.raises(AssetNotFound, match="asset_id"):
        run(projects.get_asset_version(ME, pid, asset.asset_id, 3))
    strict = ProjectPatch(policy=ProjectPolicy(allow_unlock=False))
    run(projects.patch_project(ME, pid, strict))
    run(projects.lock_asset(ME, pid, asset.asset_id, 2))
    with pytest.raises(AssetLocked, match="allow_unlock"):
        run(projects.unlock_asset(ME, pid, asset.asset_id, 2))


def test_a_character_is_described_as_an_identity(projects: ProjectsAndSearch) -> None:
    pid = run(projects.create_project(ME, ProjectDraft(name="P"))).project_id
    who = IdentityDescription(hair_colour="black", build="lean")
    _, v1 = run(
        projects.create_asset(
            ME, pid, AssetSpec(asset_type="character", name="A", identity=who), ROLES, None
        )
    )
    assert v1.canonical_prompt == who.prompt() == "black hair, lean build"
    assert len(v1.seed_bank) == 8 and v1.identity == who


def test_a_spec_names_the_field_it_lacks() -> None:
    for body, field in (
        ({"asset_type": "vehicle", "name": "x", "canonical_prompt": "p"}, "asset_type"),
        ({"asset_type": "prop", "name": "x"}, "canonical_prompt"),
        ({"asset_type": "prop", "name": "x", "canonical_prompt": "p", "colour": 1}, "colour"),
        ({"asset_type": "prop", "name": "x", "identity": {"build": "lean"}}, "identity"),
    ):
        with pytest.raises(ValidationError, match=field):
            AssetSpec.model_validate(body)


def test_search_ranks_by_prompt_inside_one_project_only(projects: ProjectsAndSearch) -> None:
    mine = run(projects.create_project(ME, ProjectDraft(name="P"))).project_id
    theirs = run(projects.create_project(OTHER, ProjectDraft(name="P"))).project_id
    made = {}
    for name, angle, kind, tags in (
        ("near", 10, "prop", ["a", "b"]),
        ("far", 80, "prop", ["a"]),
        ("middle", 40, "environment", ["b"]),
    ):
        asset, _ = run(
            projects.create_asset(
                ME, mine, spec(name=name, asset_type=kind, tags=tags), ROLES, embed(angle)
            )
        )
        made[name] = asset.asset_id
    run(projects.create_asset(OTHER, theirs, spec(name="exact"), ROLES, embed(0)))
    query = np.frombuffer(embed(0), dtype=np.float32).tolist()

    def names(*args: object) -> list[str]:
        hits = run(projects.search_assets(ME, mine, *args))  # type: ignore[arg-type]
        return [a.name for a, _, _ in hits]

    assert names(query, None, [], 0, 10) == ["near", "middle", "far"]
    assert names(query, "prop", [], 0, 10) == ["near", "far"]
    assert names(query, None, ["b"], 0, 10) == ["near", "middle"]
    assert names(query, None, [], 1, 1) == ["middle"]
    assert names(None, None, ["a"], 0, 10) == sorted(["near", "far"], key=lambda n: made[n])
    # A new version with a new prompt is what the asset is searched by from then on.
    run(
        projects.new_asset_version(
            ME, mine, made["far"], AssetChanges(canonical_prompt="x"), embed(0)
        )
    )
    assert names(query, None, [], 0, 1) == ["far"]


def test_a_taxonomy_is_stored_copied_and_searched_inside_one_project(
    projects: ProjectsAndSearch,
) -> None:
    mine = run(projects.create_project(ME, ProjectDraft(name="P"))).project_id
    theirs = run(projects.create_project(OTHER, ProjectDraft(name="P"))).project_id
    made = {}
    for name, angle, taxonomy in (
        ("fox", 10, {"species": "fox", "role": "sidekick", "era": "1920s"}),
        ("owl", 40, {"species": "owl", "role": "sidekick"}),
        ("wolf", 70, {"species": "wolf", "role": "villain", "era": "1920s"}),
        ("bare", 0, {}),
    ):
        asset, v1 = run(
            projects.create_asset(ME, mine, spec(name=name, taxonomy=taxonomy), ROLES, embed(angle))
        )
        assert v1.taxonomy == taxonomy
        made[name] = asset.asset_id
    run(projects.create_asset(OTHER, theirs, spec(taxonomy={"role": "sidekick"}), ROLES, embed(0)))
    stored = run(projects.get_asset_version(ME, mine, made["fox"], 1))
    assert stored.taxonomy == {"era": "1920s", "role": "sidekick", "species": "fox"}
    query = np.frombuffer(embed(0), dtype=np.float32).tolist()

    def names(taxonomy: dict[str, str], text: list[float] | None = query) -> list[str]:
        hits = run(projects.search_assets(ME, mine, text, None, [], 0, 10, taxonomy))
        return [a.name for a, _, _ in hits]

    assert names({"role": "sidekick"}) == ["fox", "owl"]
    assert names({"era": "1920s"}) == ["fox", "wolf"]
    assert names({"era": "1920s", "role": "villain"}) == ["wolf"]
    assert names({"era": "1920s", "species": "owl"}) == []
    assert names({"role": "Sidekick"}) == []  # values match exactly
    assert names({}) == ["bare", "fox", "owl", "wolf"]
    assert names({"role": "sidekick"}, None) == sorted(["fox", "owl"], key=lambda n: made[n])
    # A new version copies the taxonomy unless it gives one, and its taxonomy is searched.
    copied = run(projects.new_asset_version(ME, mine, made["owl"], AssetChanges(), None))
    assert copied.taxonomy == {"species": "owl", "role": "sidekick"}
    changes = AssetChanges(taxonomy={"species": "owl", "role": "villain"})
    changed = run(projects.new_asset_version(ME, mine, made["owl"], changes, None))
    assert (changed.taxonomy, changed.parent) == (changes.taxonomy, 2)
    assert names({"role": "sidekick"}) == ["fox"]
    assert names({"role": "villain"}) == ["owl", "wolf"]
    assert run(projects.get_asset_version(ME, mine, made["owl"], 1)).taxonomy["role"] == "sidekick"
    with pytest.raises(ProjectNotFound, match="project_id"):
        run(projects.search_assets(OTHER, mine, None, None, [], 0, 10, {"role": "sidekick"}))


def test_a_catalog_made_before_taxonomies_gains_the_column_and_reads_its_versions(
    projects: ProjectsAndSearch,
) -> None:
    db = projects.store
    pid = run(projects.create_project(ME, ProjectDraft(name="P"))).project_id
    run(db._write("ALTER TABLE asset_version DROP COLUMN taxonomy_json"))  # the older schema
    aid = f"ast_{new_ulid().lower()}"
    run(db._write("INSERT INTO asset VALUES (?, ?, ?, ?, ?, ?)", (pid, aid, "prop", "A", "[]", 1)))
    body = json.dumps({"canonical_prompt": "p", "seed_bank": [1], "roles": ["front"]})
    old = "INSERT INTO asset_version VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    run(db._write(old, (pid, aid, 1, False, body, "{}", None, 1, 1)))
    run(db.open())  # the schema is brought up to date where it opens
    assert run(projects.get_asset_version(ME, pid, aid, 1)).taxonomy == {}
    changes = AssetChanges(taxonomy={"era": "1920s"})
    assert run(projects.new_asset_version(ME, pid, aid, changes, None)).taxonomy == changes.taxonomy
    hits = run(projects.search_assets(ME, pid, None, None, [], 0, 10, {"era": "1920s"}))
    assert [(a.asset_id, v.version) for a, v, _ in hits] == [(aid, 2)]


@pytest.mark.parametrize(
    ("taxonomy", "words"),
    [
        ({"Species": "fox"}, "taxonomy.Species.[key]"),
        ({"species": ""}, "taxonomy.species"),
        ({"species": "fox, owl"}, "taxonomy.species"),
        ({"species": "x" * 65}, "taxonomy.species"),
        ({"k" + "x" * 32: "fox"}, "[key]"),
        ({f"k{i}": "v" for i in range(17)}, "at most 16 items"),
        ({"species": 3}, "taxonomy.species"),
        (["species", "fox"], "taxonomy"),
    ],
)
def test_a_taxonomy_beyond_its_limits_is_refused_naming_it(taxonomy: object, words: str) -> None:
    given = {"asset_type": "prop", "name": "Backpack", "canonical_prompt": "p"}
    for model, body in ((AssetSpec, given), (AssetChanges, {})):
        with pytest.raises(ValidationError) as refused:
            model.model_validate({**body, "taxonomy": taxonomy})
        errors = refused.value.errors()
        assert {e["loc"][0] for e in errors} == {"taxonomy"}, errors
        where = ".".join(str(p) for p in errors[0]["loc"])
        assert words in f"{where} {errors[0]['msg']}", errors


def test_the_log_is_every_change_in_order_and_only_grows(projects: ProjectsAndSearch) -> None:
    pid = run(projects.create_project(ME, ProjectDraft(name="P"))).project_id
    asset, _ = run(projects.create_asset(ME, pid, spec(), ROLES, None))
    run(projects.lock_asset(ME, pid, asset.asset_id, 1))
    run(projects.new_asset_version(ME, pid, asset.asset_id, AssetChanges(change_note="n"), None))
    run(projects.unlock_asset(ME, pid, asset.asset_id, 1))
    events = run(projects.project_events(ME, pid, "", 100))
    assert [e.kind for e in events] == [
        "project.created",
        "asset.created",
        "version.locked",
        "version.created",
        "version.unlocked",
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert {e.who for e in events} == {ME}
    assert events[3].payload == {
        "asset_id": asset.asset_id,
        "version": 2,
        "parent": 1,
        "change_note": "n",
    }
    assert run(projects.project_events(ME, pid, events[1].seq, 2)) == events[2:4]
    run(projects.patch_project(ME, pid, ProjectPatch(name="Q")))
    assert run(projects.project_events(ME, pid, "", 100))[:5] == events


@pytest.fixture
def filled(projects: ProjectsAndSearch) -> tuple[ProjectsAndSearch, str, str]:
    """2,000 projects with 3 events each, the first 200 with 10 assets of 2 versions, written
    in bulk, then analyzed; answers one project and one of its assets."""
    db = projects.store
    rows: dict[str, list[tuple[object, ...]]] = {k: [] for k in ("p", "a", "v", "e")}
    body = json.dumps({"canonical_prompt": "p", "seed_bank": [1], "roles": ["front"]})
    for p in range(2000):
        pid = f"prj_{new_ulid().lower()}"
        rows["p"].append((ME if p % 2 else OTHER, pid, "active", json.dumps({"name": "P"}), 1, 1))
        for a in range(10 if p < 200 else 0):
            aid = f"ast_{new_ulid().lower()}"
            rows["a"].append((pid, aid, "prop", "A", "[]", 1))
            for v in (1, 2):
                rows["v"].append((pid, aid, v, False, body, "{}", embed(a), 1, 1, "{}"))
        for _ in range(3):
            rows["e"].append((pid, new_ulid(), "k", ME, 1, "{}"))
    statements = {
        "p": "INSERT INTO project VALUES (?, ?, ?, ?, ?, ?)",
        "a": "INSERT INTO asset VALUES (?, ?, ?, ?, ?, ?)",
        "v": "INSERT INTO asset_version VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        "e": "INSERT INTO project_event VALUES (?, ?, ?, ?, ?, ?)",
    }
    write_analyzed(db, [(sql, rows[k]) for k, sql in statements.items()])
    owner, pid = rows["p"][1][0], rows["p"][1][1]
    assert owner == ME
    return projects, str(pid), str(rows["a"][10][1])


def test_plans_read_one_project_by_its_primary_keys(
    filled: tuple[ProjectsAndSearch, str, str],
) -> None:
    projects, pid, aid = filled
    db = projects.store
    for call, table in (
        (db.get_project(ME, pid), "project"),
        (db.projects_page(ME, "", 50), "project"),
        (db.get_asset(pid, aid), "asset"),
        (db.project_asset_labels(pid), "asset"),
        (db.asset_versions(pid, aid), "asset_version"),
        (db.get_asset_version(pid, aid, 2), "asset_version"),
        (db.asset_embedding(pid, aid, 2), "asset_version"),
        (db.project_embeddings(pid), "asset_version"),
        (db.project_taxonomies(pid), "asset_version"),
        (db.events_page(pid, "", 50), "project_event"),
    ):
        for sql, params in statements_of(db, call):
            assert_uses_primary_key(db, query_plan(db, sql, params), table)
    hits = run(projects.search_assets(ME, pid, [1.0] + [0.0] * 383, None, [], 0, 3))
    assert [h[0].project_id for h in hits] == [pid] * 3
    assert hits[0][2] == pytest.approx(1.0)
