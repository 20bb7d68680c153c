"""Every answer carries its variant's identity stamp, and a pack's result its consistency rate
(verified among scorable), whatever the gate wrote in the variants' meta."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.characters.uses import counted
from serve_app.characters.verdicts import IdentityStamp, Verdict
from serve_app.delivery import Delivery
from serve_app.ids import new_ulid
from serve_app.jobs.kinds.pack import consistency_rate
from serve_app.media.answers import image_answer, variant_answer
from serve_app.metrics import tapped
from serve_app.schemas import Variant
from serve_app.storage.local import LocalObjectStore, MediaSigner


def delivered(verdict: str | None) -> Delivery:
    vid = new_ulid()
    meta = {"cover_key": f"{vid}.png", "thumbnail_key": f"{vid}.webp"}
    if verdict is not None:
        meta["identity"] = {"version": 2, "verdict": verdict, "score": 0.4}
    variant = Variant(
        variant_id=vid, pk_id="nova:k", soul_id="nova", asset_url="", storage_key=f"{vid}.gif",
        meta=meta,
    )  # fmt: skip
    return Delivery(variant=variant, cache="miss")


@pytest.mark.parametrize(
    ("verdicts", "rate"),
    [
        (["verified", "verified", "off_model", "unscorable"], 2 / 3),
        (["verified", None], 1.0),  # a failed item counts nowhere
        (["unscorable"], None),
        ([], None),
    ],
)
def test_a_packs_rate_is_verified_among_scorable(
    tmp_path: Path, verdicts: list[str | None], rate: float | None
) -> None:
    objects = LocalObjectStore(str(tmp_path), MediaSigner(b"k" * 32))
    items = [
        None if v is None else image_answer(objects, 60, delivered(v), "gif") for v in verdicts
    ]
    assert consistency_rate(items) == rate
    if items and items[0] is not None:
        assert items[0].identity == IdentityStamp(version=2, verdict=verdicts[0], score=0.4)  # type: ignore[arg-type]


def test_a_soul_without_an_identity_answers_none_and_a_variant_view_its_stamp(
    tmp_path: Path,
) -> None:
    objects = LocalObjectStore(str(tmp_path), MediaSigner(b"k" * 32))
    assert image_answer(objects, 60, delivered(None), "gif").identity is None
    view = variant_answer(objects, 60, delivered("off_model").variant)
    assert view.identity is not None and view.identity.verdict == "off_model"


def test_a_delivered_variants_identity_score_is_observed_and_a_soul_without_none() -> None:
    judged = delivered("off_model").variant
    judged.meta["identity_verdict"] = Verdict(
        verdict="off_model", score=0.21, threshold=0.363, scorer="face"
    ).model_dump()
    with tapped() as values:
        counted(judged)  # counted with its verdict, and its score observed
        counted(delivered(None).variant)
    assert values["soul_identity_score"] == [0.21]
