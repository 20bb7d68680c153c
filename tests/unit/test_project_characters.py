"""A character asset that is a soul's identity: locking it pins the soul's locked identity
version as its anchor, and its renders use that version. The catalog's part on both backends
(test_facets' store); the job's over the real engines (the tiny SDXL, a SQLite catalog)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serve_app.catalog.identities import Identities
from serve_app.catalog.projects import Projects
from serve_app.characters.identities import IdentityDraft, PinMissing, PinNotLocked
from serve_app.errors import InvalidRequest
from serve_app.jobs.kinds.asset_generate import AssetGenerateJob, asset_render
from serve_app.projects.characters import NoLockedIdentity, identity_use
from serve_app.projects.models import (
    AssetChanges,
    AssetSpec,
    ProjectDraft,
    ProjectNotFound,
)
from serve_app.storage.tables import CatalogStore
from tests.support import run
from tests.unit.test_facets import alone, postgres_url, store  # noqa: F401 (fixtures)
from tests.unit.test_identity_pins import locked
from tests.unit.test_job_worker import Jobs
from tests.unit.world import World

ME, OTHER = "client-a", "client-b"


class Catalog(Projects, Identities):
    """The two facets as the Catalog mixes them."""


@pytest.fixture
def catalog(store: CatalogStore) -> Catalog:  # noqa: F811 (test_facets' fixture)
    return alone(Catalog, store)


def character(**fields: object) -> AssetSpec:
    given = {"asset_type": "character", "name": "Nova", "canonical_prompt": "a tall pilot"}
    return AssetSpec.model_validate({**given, "soul_id": "nova", **fields})


def test_a_spec_pins_a_soul_only_for_a_character_and_names_the_field() -> None:
    with pytest.raises(ValidationError, match="soul_id: only a character"):
        character(asset_type="prop")
    with pytest.raises(ValidationError, match="identity_version: pins a version of soul_id"):
        character(soul_id=None, identity_version=1)
    with pytest.raises(ValidationError, match="identity_version"):
        character(identity_version=True)
    with pytest.raises(ValidationError, match="soul_id"):
        character(soul_id="Not A Soul")


def test_an_unknown_soul_or_an_unlocked_pin_writes_nothing(catalog: Catalog) -> None:
    pid = run(catalog.create_project(ME, ProjectDraft(name="P"))).project_id
    unlocked = run(catalog.create_identity("nova", IdentityDraft(), ME))
    for spec, refused in (
        (character(soul_id="nobody"), InvalidRequest),
        (character(identity_version=99), PinMissing),
        (character(identity_version=unlocked.version), PinNotLocked),
    ):
        with pytest.raises(refused, match=r"soul_id|identity_version"):
            run(catalog.create_asset(ME, pid, spec, ["front"], None))
    assert run(catalog.store.project_asset_labels(pid)) == []
    prop = AssetSpec(asset_type="prop", name="Lamp", canonical_prompt="a lamp")
    _, made = run(catalog.create_asset(ME, pid, prop, ["front"], None))
    with pytest.raises(InvalidRequest, match="soul_id: only a character"):
        run(catalog.new_asset_version(ME, pid, made.asset_id, AssetChanges(soul_id="nova"), None))
    assert len(run(catalog.get_asset(ME, pid, made.asset_id))[1]) == 1


def test_locking_pins_the_souls_locked_identity_and_renders_use_it(catalog: Catalog) -> None:
    pid = run(catalog.create_project(ME, ProjectDraft(name="P"))).project_id
    _, made = run(catalog.create_asset(ME, pid, character(), ["front"], None))
    aid = made.asset_id
    assert made.identity_version is None and made.soul_id == "nova"
    with pytest.raises(NoLockedIdentity, match="soul_id: soul 'nova' has no locked identity"):
        run(catalog.lock_asset(ME, pid, aid, 1))
    assert not run(catalog.get_asset_version(ME, pid, aid, 1)).is_locked  # refused: unchanged
    first = locked(catalog)
    with pytest.raises(ProjectNotFound):
        run(catalog.lock_asset(OTHER, pid, aid, 1))
    pinned = run(catalog.lock_asset(ME, pid, aid, 1))
    assert pinned.is_locked and pinned.identity_version == first.version
    later = locked(catalog)  # a newer locked identity does not move the pin
    stored = run(catalog.get_asset_version(ME, pid, aid, 1))
    assert stored.identity_version == first.version
    use = run(identity_use(catalog.store, stored))
    assert use is not None and use.version == first.version
    assert use.conditioning.version == first.version and use.conditioning.soul_id == "nova"
    project = run(catalog.get_project(ME, pid))
    render = asset_render(project, stored, "character", "front", use)
    assert render.identity == use.conditioning
    event = [e for e in run(catalog.project_events(ME, pid, "", 50)) if e.kind == "version.locked"]
    assert event[-1].payload["identity_version"] == first.version
    # A new version copies the pin; one that names the soul again pins at its own lock.
    copied = run(catalog.new_asset_version(ME, pid, aid, AssetChanges(change_note="hat"), None))
    assert copied.identity_version == first.version
    again = run(catalog.new_asset_version(ME, pid, aid, AssetChanges(soul_id="nova"), None))
    assert again.identity_version is None
    unpinned_use = run(identity_use(catalog.store, again))  # unlocked: the latest locked one
    assert unpinned_use is not None and unpinned_use.version == later.version
    assert run(catalog.lock_asset(ME, pid, aid, again.version)).identity_version == later.version
    asked = run(catalog.create_asset(ME, pid, character(identity_version=1), ["front"], None))[1]
    assert run(catalog.lock_asset(ME, pid, asked.asset_id, 1)).identity_version == 1


def test_a_prop_locks_as_before_without_a_pin(catalog: Catalog) -> None:
    pid = run(catalog.create_project(ME, ProjectDraft(name="P"))).project_id
    prop = AssetSpec(asset_type="prop", name="Lamp", canonical_prompt="a lamp")
    _, made = run(catalog.create_asset(ME, pid, prop, ["front"], None))
    done = run(catalog.lock_asset(ME, pid, made.asset_id, None))
    assert done.is_locked and done.soul_id is None and done.identity_version is None
    assert run(identity_use(catalog.store, done)) is None


def test_the_job_renders_a_pinned_character_with_its_identity(world: World) -> None:
    jobs = Jobs(world, world.replica())
    engine, me = jobs.replica.catalog, "c1"  # the client Jobs reads
    pid = run(engine.create_project(me, ProjectDraft(name="P"))).project_id
    first = locked(engine)
    spec = character(identity_version=first.version, seed_bank=[3])
    _, version = run(engine.create_asset(me, pid, spec, ["front"], None))
    job = AssetGenerateJob(
        soul_id=pid, asset_id=version.asset_id, asset_type="character", version=1, roles=["front"]
    )
    job_id = run(jobs.desk.submit(me, job)).job_id
    assert jobs.work_once()
    assert jobs.doc(job_id).status == "succeeded", jobs.doc(job_id).error
    made = [e for e in run(engine.project_events(me, pid, "", 50)) if e.kind == "asset.generated"]
    assert made[0].payload["identity_version"] == first.version
