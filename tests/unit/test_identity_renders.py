"""New variants of a soul with a locked identity are made with it, over the real engines: the
order carries the latest locked version, and the variant (and so every answer) its stamp."""

from __future__ import annotations

import io

import numpy as np
from matplotlib import cbook
from PIL import Image

from deployments.dedupe import DedupeEngine
from serve_app.characters.identities import IdentityDraft
from serve_app.media.answers import image_answer
from tests.support import run
from tests.unit.world import World


def hopper_png() -> bytes:
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        pixels = np.asarray(Image.open(f).convert("RGB"))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def test_a_render_of_a_soul_with_a_locked_identity_carries_its_version(world: World) -> None:
    replica = world.replica()
    catalog = replica.catalog
    made = run(catalog.create_identity("nova", IdentityDraft(), "c1"))
    key = "soul/nova/identity/1/reference/hopper.png"
    world.objects.put(key, hopper_png())
    with_refs = run(catalog.add_identity_references("nova", 1, [key], "c1"))
    unlocked = replica.image("a red fox", "u1")
    assert "identity" not in unlocked.variant.meta  # not locked yet: no identity
    assert image_answer(world.objects, 60, unlocked, "gif").identity is None
    anchors = DedupeEngine().identity_anchors([world.objects.get(key)])
    run(catalog.lock_identity("nova", 1, anchors, with_refs.updated_at_ts, made.owner))

    delivered = replica.image("a blue whale", "u1")
    stamp = delivered.variant.meta["identity"]
    assert stamp["version"] == 1
    assert stamp["verdict"] in ("verified", "off_model", "unscorable")
    answer = image_answer(world.objects, 60, delivered, "gif")
    assert answer.identity is not None and answer.identity.version == 1
