"""IP-Adapter conditioning over the real Renderer and the tiny IP-Adapter (random weights: the
tests show wiring, what moves a render and what is computed once, not likeness)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from skimage import data as skimage_data

from deployments.renderer import RendererConfig, RendererEngine
from serve_app.characters.verdicts import IdentityConditioning
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_IP_ADAPTER, TINY_MODEL
from serve_app.schemas import RenderJob
from serve_app.storage.local import LocalObjectStore, MediaSigner


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).resize((64, 64)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> LocalObjectStore:
    store = LocalObjectStore(str(tmp_path_factory.mktemp("objects")), MediaSigner(b"test"))
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        store.put("soul/a/identity/1/references/0.png", png(np.asarray(Image.open(f))))
    store.put("soul/b/identity/1/references/0.png", png(skimage_data.astronaut()))
    return store


def engine(models_dir: Path, objects: LocalObjectStore) -> RendererEngine:
    config = RendererConfig(steps=2, width=64, height=64, ip_adapter=TINY_IP_ADAPTER)
    return RendererEngine(ModelManager(models_dir), config, objects)


@pytest.fixture(scope="module")
def conditioned(models_dir: Path, objects: LocalObjectStore) -> RendererEngine:
    return engine(models_dir, objects)


def identity(soul: str, strength: float = 1.0) -> IdentityConditioning:
    return IdentityConditioning(
        soul_id=soul,
        version=1,
        reference_keys=[f"soul/{soul}/identity/1/references/0.png"],
        strength=strength,
    )


def job(seed: int, who: IdentityConditioning | None = None) -> RenderJob:
    return RenderJob(
        style_id="style-1",
        base_model_ref=TINY_MODEL,
        prompt="portrait, pastel",
        negative_prompt="blurry",
        seed=seed,
        identity=who,
    )


def pixels(renderer: RendererEngine, render: RenderJob) -> np.ndarray:
    return renderer.render(render).pixels[0].astype(np.int16)


def test_conditioning_changes_the_render_by_reference_and_strength(
    conditioned: RendererEngine,
) -> None:
    plain = pixels(conditioned, job(7))
    hopper = pixels(conditioned, job(7, identity("a")))
    astronaut = pixels(conditioned, job(7, identity("b")))
    weaker = pixels(conditioned, job(7, identity("a", strength=0.3)))
    assert np.abs(hopper - plain).mean() > 1.0
    assert np.abs(hopper - astronaut).mean() > 1.0  # the reference matters
    assert np.abs(hopper - weaker).mean() > 1.0  # and the strength
    # The weaker conditioning moves the render less far from the unconditioned one.
    assert np.abs(weaker - plain).mean() < np.abs(hopper - plain).mean()
    # An unconditioned job on the adapted pipeline is the plain render it always was.
    np.testing.assert_array_equal(pixels(conditioned, job(7)), plain)


def test_different_identities_batch_together_each_as_rendered_alone(
    conditioned: RendererEngine,
) -> None:
    jobs = [job(3, identity("a")), job(4, identity("b"))]
    batched = conditioned.render_batch(jobs)
    for render, outcome in zip(jobs, batched, strict=True):
        assert not isinstance(outcome, Exception)
        alone = pixels(conditioned, render)
        assert np.abs(outcome.pixels[0].astype(np.int16) - alone).max() <= 2


def test_a_versions_embedding_is_computed_once_and_cached_in_the_object_store(
    models_dir: Path, objects: LocalObjectStore
) -> None:
    first = engine(models_dir, objects)
    who = identity("a", strength=0.6)
    key = who.embeds_key(TINY_IP_ADAPTER)
    objects.delete(key) if objects.exists(key) else None
    first.render(job(1, who))
    first.render(job(2, who))
    assert first.conditioner.computed == 1 and objects.exists(key)
    second = engine(models_dir, objects)  # another replica: reads the stored embedding
    second.render(job(1, who))
    assert second.conditioner.computed == 0
