"""The consistency gate over the real engines: Dedupe judges novelty and identity in one call;
an off-model render is rendered again, and when no render is verified the best is delivered and
flagged. The tiny models draw no faces, so the image-embedding fallback (the tiny CLIP) decides,
its threshold set to say "off model" or "verified" on purpose."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployments.dedupe import DedupeConfig, DedupeEngine
from serve_app.characters.verdicts import (
    IdentityAnchors,
    IdentityConditioning,
    IdentityThresholds,
    IdentityUse,
)
from serve_app.delivery.checks import with_identity
from serve_app.delivery.order import Order
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_CLIP
from tests.unit.world import Replica, World


@pytest.fixture
def dedupe(models_dir: Path) -> DedupeEngine:
    return DedupeEngine(DedupeConfig(clip_model=TINY_CLIP), ModelManager(models_dir))


def faceless_anchors(dedupe: DedupeEngine) -> IdentityAnchors:
    out = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(out, format="PNG")
    return dedupe.identity_anchors([out.getvalue()])


def gated(
    world: World, dedupe: DedupeEngine, thresholds: IdentityThresholds, monkeypatch
) -> Replica:
    """A replica whose new variants are made with identity version 1 of soul "nova" (as the
    API's lookup of a soul's locked version does)."""
    replica = world.replica(dedupe=dedupe, identity=thresholds, dedupe_attempts=1)
    use = IdentityUse(
        version=1,
        anchors=faceless_anchors(dedupe),
        conditioning=IdentityConditioning(
            soul_id="nova", version=1, reference_keys=["soul/nova/ref.png"], strength=0.5
        ),
    )
    maker = replica.deliverer.maker
    make = maker.make

    async def make_with_identity(order: Order) -> object:
        return await make(with_identity(order, use, thresholds))

    monkeypatch.setattr(maker, "make", make_with_identity)
    return replica


def test_the_anchors_of_faceless_references_are_an_image_embedding(
    dedupe: DedupeEngine,
) -> None:
    anchors = faceless_anchors(dedupe)
    assert anchors.face_anchor is None and anchors.image_anchor is not None
    assert anchors.models == [TINY_CLIP] and anchors.reference_count == 1


def test_an_off_model_render_is_rendered_again_then_the_best_delivered_and_flagged(
    world: World, dedupe: DedupeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    thresholds = IdentityThresholds(image=0.9999, attempts=3)  # no render is that close
    replica = gated(world, dedupe, thresholds, monkeypatch)
    delivery = replica.image("penguin", "a")
    assert replica.renders == 3  # identity.attempts, though dedupe alone tries once
    meta = delivery.variant.meta
    assert meta["identity_flagged"] is True
    assert meta["identity"]["version"] == 1 and meta["identity"]["verdict"] == "off_model"
    verdict = meta["identity_verdict"]
    assert verdict["scorer"] == "image" and verdict["threshold"] == pytest.approx(0.9999)
    assert verdict["score"] == meta["identity"]["score"] < 0.9999


def test_a_verified_render_is_delivered_at_once_unflagged(
    world: World, dedupe: DedupeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    thresholds = IdentityThresholds(image=-1.0, attempts=3)  # every render passes
    replica = gated(world, dedupe, thresholds, monkeypatch)
    delivery = replica.image("penguin", "a")
    assert replica.renders == 1
    assert delivery.variant.meta["identity_flagged"] is False
    assert delivery.variant.meta["identity"]["verdict"] == "verified"


def test_a_soul_without_identity_has_no_verdict(world: World, dedupe: DedupeEngine) -> None:
    delivery = world.replica(dedupe=dedupe).image("penguin", "a")
    assert "identity" not in delivery.variant.meta
