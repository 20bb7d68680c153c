"""IP-Adapter conditioning in the real Animator with the tiny IP-Adapter (random weights: the
tests show wiring, not likeness): a locked identity's embedding moves the frames set in motion,
and where they move depends on the reference; the embedding is the one the Renderer caches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from skimage import data as skimage_data

from deployments.animator import AnimatorConfig, AnimatorEngine
from serve_app.characters.verdicts import IdentityConditioning
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_IP_ADAPTER, TINY_MODEL, TINY_MOTION
from serve_app.schemas import AnimateJob, Frames
from serve_app.storage.local import LocalObjectStore, MediaSigner
from tests.unit.test_identity_conditioning import png

JOB = AnimateJob(
    base_model_ref=TINY_MODEL, prompt="portrait, pastel", negative_prompt="blurry", seed=5
)


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> LocalObjectStore:
    store = LocalObjectStore(str(tmp_path_factory.mktemp("objects")), MediaSigner(b"test"))
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        store.put("soul/a/identity/1/reference/0.png", png(np.asarray(Image.open(f))))
    store.put("soul/b/identity/1/reference/0.png", png(skimage_data.astronaut()))
    return store


@pytest.fixture(scope="module")
def animator(models_dir: Path, objects: LocalObjectStore) -> AnimatorEngine:
    config = AnimatorConfig(
        frames=6, steps=2, batch_size=4, strength=0.5, ip_adapter=TINY_IP_ADAPTER
    )
    return AnimatorEngine(ModelManager(models_dir), config, objects)


@pytest.fixture(scope="module")
def render() -> Frames:
    pixels = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    return Frames(pixels=pixels, meta={"seed": 5})


def identity(soul: str) -> IdentityConditioning:
    return IdentityConditioning(
        soul_id=soul,
        version=1,
        reference_keys=[f"soul/{soul}/identity/1/reference/0.png"],
        strength=1.0,
    )


def frames(animator: AnimatorEngine, render: Frames, job: AnimateJob) -> np.ndarray:
    return animator.animate(render, job).pixels.astype(np.int16)


def test_subtle_frames_are_conditioned_on_the_identity_and_depend_on_its_reference(
    animator: AnimatorEngine, render: Frames, objects: LocalObjectStore
) -> None:
    plain = frames(animator, render, JOB)
    hopper = frames(animator, render, JOB.model_copy(update={"identity": identity("a")}))
    astronaut = frames(animator, render, JOB.model_copy(update={"identity": identity("b")}))
    np.testing.assert_array_equal(hopper[0], plain[0])  # the render itself is kept
    assert np.abs(hopper[1:] - plain[1:]).mean() > 1.0  # the adapter moves the variations
    assert np.abs(hopper[1:] - astronaut[1:]).mean() > 1.0  # and the reference matters
    # Unconditioned on the adapted pipeline, the frames are the plain ones they always were.
    np.testing.assert_array_equal(frames(animator, render, JOB), plain)
    # One embedding per version, cached where the Renderer caches it.
    assert animator.conditioner.computed == 2
    assert objects.exists(identity("a").embeds_key(TINY_IP_ADAPTER))


def test_animated_frames_are_conditioned_on_the_identity(
    animator: AnimatorEngine, render: Frames
) -> None:
    moving = JOB.model_copy(update={"mode": "animated", "motion_module": TINY_MOTION})
    plain = frames(animator, render, moving)
    hopper = frames(animator, render, moving.model_copy(update={"identity": identity("a")}))
    astronaut = frames(animator, render, moving.model_copy(update={"identity": identity("b")}))
    assert np.abs(hopper - plain).mean() > 1.0
    assert np.abs(hopper - astronaut).mean() > 1.0
