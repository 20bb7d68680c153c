"""The identities facet over a real store, on both backends: versions numbered per soul,
edited by their maker while unlocked, frozen by a lock fenced on what the anchors were made of."""

from __future__ import annotations

import pickle

import pytest

from serve_app.catalog.identities import Identities
from serve_app.catalog.variants import Variants
from serve_app.characters.identities import (
    SEED_BANK_SIZE,
    IdentityChanged,
    IdentityDescription,
    IdentityDraft,
    IdentityLocked,
    IdentityNotLocked,
    NoIdentityVersion,
    NotIdentityOwner,
)
from serve_app.characters.verdicts import IdentityAnchors, IdentityStamp
from serve_app.errors import InvalidRequest, UnknownSoul
from serve_app.ids import new_ulid, now_ms
from serve_app.prompts import pk_id
from serve_app.schemas import Variant
from serve_app.storage.tables import CatalogStore
from tests.support import run
from tests.unit.test_facets import alone, postgres_url, store  # noqa: F401 (fixtures)

ME, OTHER = "client-a", "client-b"
ADA = IdentityDescription(
    age_range="30-40",
    gender_presentation="woman",
    hair_colour="auburn",
    hair_style="short bob",
    eye_colour="green",
    distinctive_features=["freckles", "round glasses"],
    free_text="calm smile",
)


@pytest.fixture
def identities(store: CatalogStore) -> Identities:  # noqa: F811 (test_facets' fixture)
    """The facet over test_facets' store: SQLite, then PostgreSQL."""
    return alone(Identities, store)


def test_versions_are_numbered_per_soul_with_a_canonical_prompt_and_a_seed_bank(
    identities: Identities,
) -> None:
    first = run(identities.create_identity("nova", IdentityDraft(description=ADA), ME))
    assert (first.version, first.state, first.owner) == (1, "unlocked", ME)
    assert first.prompt == (
        "30-40 years old, woman, auburn short bob hair, green eyes, freckles, round glasses, "
        "calm smile"
    )
    assert len(first.seed_bank) == SEED_BANK_SIZE
    second = run(
        identities.create_identity(
            "nova", IdentityDraft(seed_bank=[7, 8], parent=1, change_note="older"), OTHER
        )
    )
    assert (second.version, second.seed_bank, second.parent) == (2, [7, 8], 1)
    assert run(identities.create_identity("valentina", IdentityDraft(), ME)).version == 1
    assert [v.version for v in run(identities.list_identities("nova"))] == [1, 2]
    assert run(identities.get_identity("nova", 2)) == second
    with pytest.raises(InvalidRequest, match="parent"):
        run(identities.create_identity("nova", IdentityDraft(parent=9), ME))
    with pytest.raises(UnknownSoul):
        run(identities.create_identity("nobody", IdentityDraft(), ME))
    with pytest.raises(NoIdentityVersion):
        run(identities.get_identity("nova", 3))


def test_only_the_maker_edits_an_unlocked_version_and_a_locked_one_refuses_everything(
    identities: Identities,
) -> None:
    made = run(identities.create_identity("nova", IdentityDraft(seed_bank=[1, 2, 3]), ME))
    draft = IdentityDraft(description=ADA, strength=0.9)
    edited = run(identities.edit_identity("nova", 1, draft, ME))
    assert (edited.prompt, edited.strength, edited.seed_bank) == (ADA.prompt(), 0.9, [1, 2, 3])
    assert edited.updated_at_ts > made.updated_at_ts
    with pytest.raises(NotIdentityOwner):
        run(identities.edit_identity("nova", 1, draft, OTHER))
    with_refs = run(identities.add_identity_references("nova", 1, ["a.png", "b.png"], ME))
    assert with_refs.references == ["a.png", "b.png"]
    assert run(identities.locked_identity("nova", None)) is None
    with pytest.raises(IdentityNotLocked, match="not locked"):
        run(identities.locked_identity("nova", 1))

    anchors = IdentityAnchors(face_anchor=[0.6, 0.8], reference_count=2, face_count=2)
    locked = run(identities.lock_identity("nova", 1, anchors, with_refs.updated_at_ts, ME))
    assert (locked.state, locked.anchors) == ("locked", anchors)
    assert run(identities.get_identity("nova", 1)) == locked
    for change in (
        lambda: identities.edit_identity("nova", 1, draft, ME),
        lambda: identities.add_identity_references("nova", 1, ["c.png"], ME),
        lambda: identities.lock_identity("nova", 1, anchors, locked.updated_at_ts, ME),
    ):
        with pytest.raises(IdentityLocked):
            run(change())
    assert run(identities.get_identity("nova", 1)) == locked
    assert run(identities.locked_identity("nova", None)) == locked
    run(identities.create_identity("nova", IdentityDraft(parent=1), ME))
    assert run(identities.locked_identity("nova", None)) == locked  # 2 is not locked yet
    assert run(identities.locked_identity("nova", 1)) == locked


def test_a_lock_refuses_a_version_changed_since_its_anchors_were_made(
    identities: Identities,
) -> None:
    read = run(identities.create_identity("nova", IdentityDraft(), ME))
    run(identities.add_identity_references("nova", 1, ["late.png"], ME))
    with pytest.raises(IdentityChanged):
        run(identities.lock_identity("nova", 1, IdentityAnchors(), read.updated_at_ts, ME))
    assert run(identities.get_identity("nova", 1)).state == "unlocked"


def judged(soul: str, version: int, verdict: str, flagged: bool = False) -> Variant:
    vid = new_ulid()
    stamp = IdentityStamp(version=version, verdict=verdict, score=0.5)  # type: ignore[arg-type]
    meta = {"identity": stamp.model_dump(), "identity_flagged": flagged}
    return Variant(
        variant_id=vid,
        pk_id=pk_id(soul, "a fox"),
        soul_id=soul,
        asset_url="",
        storage_key=vid,
        meta=meta,
    )


def test_the_report_rates_each_version_and_pages_through_the_flagged(
    identities: Identities,
) -> None:
    variants = alone(Variants, identities.store)
    made = [
        judged("nova", 1, "verified"),
        judged("nova", 1, "off_model", flagged=True),
        judged("nova", 1, "unscorable"),
        judged("nova", 2, "verified"),
        judged("nova", 2, "off_model", flagged=True),
        judged("nova", 2, "off_model", flagged=True),
        judged("valentina", 1, "off_model", flagged=True),
    ]
    for variant in made:
        run(variants.put_variant(variant, []))
    report = run(identities.identity_report("nova", None, 0, "", 1))
    rates = {r.version: (r.verified, r.off_model, r.unscorable, r.flagged) for r in report.versions}
    assert rates == {1: (1, 1, 1, 1), 2: (1, 2, 0, 2)}
    assert [r.consistency_rate for r in report.versions] == [0.5, pytest.approx(1 / 3)]
    assert [v.variant_id for v in report.flagged] == [made[1].variant_id]
    rest = run(identities.identity_report("nova", None, 0, report.next_after or "", 5))
    assert [v.variant_id for v in rest.flagged] == [made[4].variant_id, made[5].variant_id]
    assert rest.next_after is None
    only_two = run(identities.identity_report("nova", 2, 0, "", 5))
    assert [r.version for r in only_two.versions] == [2] and len(only_two.flagged) == 2
    assert run(identities.identity_report("nova", None, now_ms() + 60_000, "", 5)).versions == []


@pytest.mark.parametrize(
    "error", [NoIdentityVersion, IdentityLocked, NotIdentityOwner, IdentityChanged]
)
def test_version_errors_cross_replicas_whole(error: type[Exception]) -> None:
    """Ray pickles an error raised in the Catalog: it must come back as itself (else a 500)."""
    raised = error("nova", 3)
    remade = pickle.loads(pickle.dumps(raised))
    assert type(remade) is error and str(remade) == str(raised)
