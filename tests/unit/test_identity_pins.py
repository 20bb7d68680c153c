"""Renders of a soul use one identity version: its latest locked one, or the locked one a request
pins (``identity_version``). A cache hit is only ever a variant made with that very version:
never another version's face, nor one from before the lock. The catalog's part runs on both
backends (test_facets' store); the delivery's over the real engines (a SQLite catalog)."""

from __future__ import annotations

import pickle

import pytest

from serve_app.catalog.identities import Identities
from serve_app.catalog.keys import PromptKeys
from serve_app.characters.identities import (
    IdentityDraft,
    IdentityVersion,
    PinMissing,
    PinNotLocked,
)
from serve_app.characters.verdicts import IdentityAnchors, IdentityStamp, IdentityThresholds
from serve_app.delivery import Place
from serve_app.errors import InvalidRequest
from serve_app.ids import new_ulid
from serve_app.prompts import pk_id
from serve_app.schemas import AnimateJob, Frames, Variant
from serve_app.storage.tables import CatalogStore
from tests.support import run
from tests.unit.test_facets import Served, alone, postgres_url, store  # noqa: F401 (fixtures)
from tests.unit.test_identity_renders import hopper_png
from tests.unit.world import World

ME = "client-a"
ANCHORS = IdentityAnchors(image_anchor=[1.0, 0.0], models=["tiny"], reference_count=1)


def made_with(version: int | None, cue: str = "a fox") -> Variant:
    """A variant of nova's ``cue`` stamped as made with identity ``version`` (None: none)."""
    vid = new_ulid()
    meta = {}
    if version is not None:
        meta["identity"] = IdentityStamp(version=version, verdict="verified").model_dump()
    return Variant(
        variant_id=vid,
        pk_id=pk_id("nova", cue),
        soul_id="nova",
        asset_url="",
        storage_key=vid,
        meta=meta,
    )


def locked(identities: Identities, soul_id: str = "nova") -> IdentityVersion:
    """A new version of the soul, with a reference, locked."""
    made = run(identities.create_identity(soul_id, IdentityDraft(), ME))
    ref = f"soul/{soul_id}/identity/{made.version}/reference/r.png"
    with_ref = run(identities.add_identity_references(soul_id, made.version, [ref], ME))
    return run(identities.lock_identity(soul_id, made.version, ANCHORS, with_ref.updated_at_ts, ME))


class Catalog(PromptKeys, Identities):
    """The two facets a lookup with a pin reads."""


@pytest.fixture
def catalog(store: CatalogStore) -> Catalog:  # noqa: F811 (test_facets' fixture)
    return alone(Catalog, store)


def test_the_identity_a_render_uses_is_the_latest_locked_or_the_pinned_one(
    catalog: Catalog,
) -> None:
    assert run(catalog.identity_use("nova", None)) is None  # no identity yet
    first = locked(catalog)
    run(catalog.create_identity("nova", IdentityDraft(), ME))  # version 2, unlocked
    use = run(catalog.identity_use("nova", None))
    assert use is not None and use.version == first.version == 1
    assert use.conditioning.reference_keys == first.references
    third = locked(catalog)
    latest, pinned = run(catalog.identity_use("nova", None)), run(catalog.identity_use("nova", 1))
    assert latest is not None and latest.version == third.version == 3
    assert pinned is not None and pinned.version == 1
    with pytest.raises(PinNotLocked, match=r"^identity_version: version 2 .* not locked"):
        run(catalog.identity_use("nova", 2))
    with pytest.raises(PinMissing, match=r"^identity_version: soul 'nova' has no .* version 9"):
        run(catalog.identity_use("nova", 9))
    with pytest.raises(PinMissing):
        run(catalog.identity_use("valentina", 1))


def test_a_claim_takes_only_variants_made_with_the_version_asked_for(catalog: Catalog) -> None:
    key = pk_id("nova", "a fox")
    before, one, two = made_with(None), made_with(1), made_with(2)
    for variant in (before, one, two):
        run(catalog.store.upsert_variant(variant))
    assert run(catalog.users_lacking_unseen(key, ["u1"], 2)) == []
    assert run(catalog.claim_unseen(key, "u1", "", 2)) == two
    assert run(catalog.claim_unseen(key, "u1", "", 2)) is None  # one and before are not hits
    assert run(catalog.users_lacking_unseen(key, ["u1", "u2"], 2)) == ["u1"]
    assert run(catalog.claim_unseen(key, "u1", "", 1)) == one
    assert run(catalog.claim_unseen(key, "u1")) == before  # a soul without an identity
    assert run(catalog.claim_unseen(key, "u1")) is None


def test_a_lookup_claims_with_the_soul_s_identity_and_refuses_a_bad_pin_claiming_nothing(
    catalog: Catalog,
) -> None:
    lookup = run(catalog.lookup("nova", "a fox", "u0"))
    assert lookup is not None and lookup.key is None and lookup.identity is None
    key = run(catalog.ensure_key("nova", lookup.key_norm)).pk_id
    before = made_with(None).model_copy(update={"pk_id": key})
    run(catalog.store.upsert_variant(before))
    assert run(catalog.lookup("nova", "a fox", "u0")).claimed == before  # type: ignore[union-attr]
    locked(catalog)
    one = made_with(1).model_copy(update={"pk_id": key})
    run(catalog.store.upsert_variant(one))
    locked(catalog)
    latest = run(catalog.lookup("nova", "a fox", "u1"))
    assert latest is not None and latest.identity is not None and latest.identity.version == 2
    assert latest.claimed is None  # neither the pre-lock variant nor version 1's
    pinned = run(catalog.lookup("nova", "a fox", "u1", "", 1))
    assert pinned is not None and pinned.identity is not None and pinned.identity.version == 1
    assert pinned.claimed is not None and pinned.claimed.variant_id == one.variant_id
    run(catalog.create_identity("nova", IdentityDraft(), ME))  # version 3, unlocked
    for bad in (3, 4):
        with pytest.raises(InvalidRequest, match=r"^identity_version"):
            run(catalog.lookup("nova", "a fox", "u2", "", bad))
    assert run(catalog.store.seen_among("u2", [before.variant_id, one.variant_id])) == set()


@pytest.mark.parametrize("error", [PinMissing, PinNotLocked])
def test_pin_errors_cross_replicas_whole(error: type[Exception]) -> None:
    raised = error("nova", 3)
    remade = pickle.loads(pickle.dumps(raised))
    assert type(remade) is error and str(remade) == str(raised)


def lock_with_hopper(world: World, replica, version: int) -> None:  # type: ignore[no-untyped-def]
    """Version ``version`` of nova, made with Grace Hopper as its reference, locked."""
    from deployments.dedupe import DedupeEngine

    catalog = replica.catalog
    made = run(catalog.create_identity("nova", IdentityDraft(), ME))
    assert made.version == version
    key = f"soul/nova/identity/{version}/reference/hopper.png"
    world.objects.put(key, hopper_png())
    with_refs = run(catalog.add_identity_references("nova", version, [key], ME))
    anchors = DedupeEngine().identity_anchors([world.objects.get(key)])
    run(catalog.lock_identity("nova", version, anchors, with_refs.updated_at_ts, ME))


def test_hits_are_made_with_the_version_a_request_renders_with(world: World) -> None:
    """Over the real engines: a variant from before the lock, or of an older version, is never a
    hit for a request that renders with the latest version; a pin gets its version's variants,
    and a new render made with it when there is none."""
    replica = world.replica(identity=IdentityThresholds(attempts=1))
    before = replica.image("a red fox", "u1")
    assert "identity" not in before.variant.meta
    lock_with_hopper(world, replica, 1)
    first = run(replica.deliverer.image("nova", "a red fox", "u2"))
    assert first.cache == "miss" and first.variant.meta["identity"]["version"] == 1
    lock_with_hopper(world, replica, 2)
    latest = run(replica.deliverer.image("nova", "a red fox", "u3"))
    assert latest.cache == "miss" and latest.variant.meta["identity"]["version"] == 2
    renders = replica.renders
    pinned = run(replica.deliverer.image("nova", "a red fox", "u3", identity_version=1))
    assert pinned.cache == "hit" and pinned.variant.variant_id == first.variant.variant_id
    assert replica.renders == renders  # a hit renders nothing
    again = run(replica.deliverer.image("nova", "a red fox", "u3", identity_version=1))
    assert again.cache == "miss" and again.variant.meta["identity"]["version"] == 1


def test_a_bad_pin_writes_nothing(world: World) -> None:
    replica = world.replica()
    lock_with_hopper(world, replica, 1)
    run(replica.catalog.create_identity("nova", IdentityDraft(), ME))  # 2, unlocked
    variants, seen = world.variant_ids(), world.seen("u1")
    for bad in (2, 3):
        with pytest.raises(InvalidRequest, match=r"^identity_version"):
            run(replica.deliverer.image("nova", "a red fox", "u1", identity_version=bad))
        with pytest.raises(InvalidRequest, match=r"^identity_version"):
            place = Place("paris", "happy")
            run(replica.deliverer.selfie("nova", place, "u1", identity_version=bad))
        with pytest.raises(InvalidRequest, match=r"^identity_version"):
            run(replica.deliverer.check_identity("nova", bad))
    assert (world.variant_ids(), world.seen("u1")) == (variants, seen)
    assert replica.renders == 0


def test_animating_anew_conditions_on_the_version_the_variant_was_made_with(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Animator gets the original's identity version (the same face), not the latest one,
    and the new variant is stamped with it, so a pin of that version can be served it."""
    replica = world.replica(identity=IdentityThresholds(attempts=1))
    jobs: list[AnimateJob] = []
    animate = world.animator.animate

    def seen(image: Frames, job: AnimateJob) -> Frames:
        jobs.append(job)
        return animate(image, job)

    monkeypatch.setattr(world.animator, "animate", seen)
    before = replica.image("a red fox", "u1")  # made before any lock
    lock_with_hopper(world, replica, 1)
    first = replica.image("a blue whale", "u1")
    lock_with_hopper(world, replica, 2)
    assert [j.identity for j in jobs] == [None, jobs[1].identity]
    assert jobs[1].identity is not None and jobs[1].identity.version == 1

    moved = run(replica.deliverer.animate(first.variant.variant_id, "u2", "subtle"))
    assert jobs[-1].identity is not None and jobs[-1].identity.version == 1
    assert moved.variant.meta["identity"] == first.variant.meta["identity"]
    unlocked_face = run(replica.deliverer.animate(before.variant.variant_id, "u2", "subtle"))
    assert jobs[-1].identity is None and "identity" not in unlocked_face.variant.meta


class Reserved(Served, Identities):
    """The reserve beside the claims it counts and the identities it reads."""


def test_the_reserve_counts_only_the_variants_its_next_users_can_be_served(
    store: CatalogStore,  # noqa: F811 (test_facets' fixture)
) -> None:
    reserve = alone(Reserved, store, reserve={"enabled": True, "depth": 2, "hot_per_min": 0.01})
    key = pk_id("nova", "a fox")
    for variant in (made_with(None), made_with(None)):
        run(reserve.put_variant(variant, []))
    run(reserve.claim_unseen(key, "u1"))  # u1 will have had 1
    run(reserve.flush_demand())
    assert run(reserve.reserve_short(key)) == 1  # 2 variants, 1 seen: one more for depth 2
    locked(reserve)
    assert run(reserve.reserve_short(key)) == 3  # none of them shows version 1's face
    run(reserve.put_variant(made_with(1), []))
    assert run(reserve.reserve_short(key)) == 2
