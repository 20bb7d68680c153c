"""Several identities in one render, each in its own region (diffusers' IP-Adapter masks), over
the real Renderer and the tiny IP-Adapter (random weights: wiring and what moves, not likeness)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import cbook
from PIL import Image
from skimage import data as skimage_data

from deployments.renderer import RendererEngine
from serve_app.characters.verdicts import IdentityConditioning, RegionIdentity
from serve_app.diffusion.tiny import TINY_MODEL
from serve_app.schemas import RenderJob
from serve_app.storage.local import LocalObjectStore, MediaSigner
from tests.unit.test_identity_conditioning import engine, identity, png

LEFT, RIGHT = (0.0, 0.0, 0.5, 1.0), (0.5, 0.0, 1.0, 1.0)


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> LocalObjectStore:
    store = LocalObjectStore(str(tmp_path_factory.mktemp("objects")), MediaSigner(b"test"))
    with cbook.get_sample_data("grace_hopper.jpg") as f:
        store.put("soul/a/identity/1/references/0.png", png(np.asarray(Image.open(f))))
    store.put("soul/b/identity/1/references/0.png", png(skimage_data.astronaut()))
    return store


@pytest.fixture(scope="module")
def conditioned(models_dir: Path, objects: LocalObjectStore) -> RendererEngine:
    return engine(models_dir, objects)


def cast(*members: tuple[IdentityConditioning, tuple[float, float, float, float]]) -> Any:
    return [RegionIdentity(identity=who, box=box) for who, box in members]


def job(seed: int, members: list[RegionIdentity] | None = None) -> RenderJob:
    return RenderJob(
        style_id="style-1",
        base_model_ref=TINY_MODEL,
        prompt="two people, pastel",
        negative_prompt="blurry",
        seed=seed,
        cast=members or [],
    )


@pytest.fixture
def calls(conditioned: RendererEngine, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every call of the tiny SDXL pipeline, at its boundary."""
    pipe = conditioned.pipelines.base(TINY_MODEL)
    seen: list[dict[str, Any]] = []
    call = type(pipe).__call__

    def captured(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return call(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", captured)
    return seen


def pixels(renderer: RendererEngine, render: RenderJob) -> np.ndarray:
    return renderer.render(render).pixels[0].astype(np.int16)


def test_each_identity_conditions_its_own_region(
    conditioned: RendererEngine, calls: list[dict[str, Any]]
) -> None:
    two = pixels(conditioned, job(7, cast((identity("a"), LEFT), (identity("b"), RIGHT))))
    (kwargs,) = calls
    (embeds,) = kwargs["ip_adapter_image_embeds"]
    assert embeds.shape[:2] == (2, 2)  # (unconditional + conditional, two images, embedding)
    assert not embeds[0].any()  # the unconditional row is zeros
    (masks,) = kwargs["cross_attention_kwargs"]["ip_adapter_masks"]
    assert tuple(masks.shape) == (1, 2, 64, 64)  # one mask an identity, at the render size
    assert masks[0, 0, :, :32].all() and not masks[0, 0, :, 32:].any()
    assert masks[0, 1, :, 32:].all() and not masks[0, 1, :, :32].any()
    plain = pixels(conditioned, job(7))
    assert "cross_attention_kwargs" not in calls[-1]
    left, right = np.abs(two - plain)[:, :32], np.abs(two - plain)[:, 32:]
    assert left.mean() > 1.0 and right.mean() > 1.0  # both regions move
    swapped = pixels(conditioned, job(7, cast((identity("b"), LEFT), (identity("a"), RIGHT))))
    assert np.abs(swapped - two).mean() > 1.0  # who stands where matters
    # Each identity at its own strength: one weaker identity is not both weaker.
    one = pixels(conditioned, job(7, cast((identity("a", 0.3), LEFT), (identity("b"), RIGHT))))
    both = pixels(
        conditioned, job(7, cast((identity("a", 0.3), LEFT), (identity("b", 0.3), RIGHT)))
    )
    assert np.abs(one - two).mean() > 1.0 and np.abs(one - both).mean() > 1.0
    # A job with one identity and no mask renders as it always did after a masked call.
    alone = RenderJob(**{**job(7).model_dump(), "identity": identity("a")})
    before = pixels(conditioned, alone)
    pixels(conditioned, job(7, cast((identity("a"), LEFT), (identity("b"), RIGHT))))
    np.testing.assert_array_equal(pixels(conditioned, alone), before)


def test_casts_batch_only_with_the_same_regions(
    conditioned: RendererEngine, calls: list[dict[str, Any]]
) -> None:
    pair = cast((identity("a"), LEFT), (identity("b"), RIGHT))
    jobs = [
        job(3, pair),
        job(4, cast((identity("b"), LEFT), (identity("a"), RIGHT))),
        job(5, pair),
        job(6, cast((identity("a"), (0.0, 0.0, 0.4, 1.0)), (identity("b"), (0.6, 0.0, 1.0, 1.0)))),
        job(7, cast((identity("a"), (0.0, 0.0, 1.0, 1.0)))),
        RenderJob(**{**job(8).model_dump(), "identity": identity("a")}),
    ]
    batched = conditioned.render_batch(jobs)
    # The same regions batch, whoever stands in them (3, 4, 5); other regions, another count
    # of masks or none at all are calls of their own.
    assert len(calls) == 4
    shapes = sorted(tuple(c["ip_adapter_image_embeds"][0].shape[:2]) for c in calls)
    assert shapes == [(2, 1), (2, 1), (2, 2), (6, 2)]
    for render, outcome in zip(jobs, batched, strict=True):
        assert not isinstance(outcome, Exception)
        alone = pixels(conditioned, render)
        assert np.abs(outcome.pixels[0].astype(np.int16) - alone).max() <= 2


def test_a_box_must_lie_in_the_frame_and_a_job_takes_one_form() -> None:
    with pytest.raises(ValueError, match="left < right"):
        RegionIdentity(identity=identity("a"), box=(0.5, 0.0, 0.5, 1.0))
    with pytest.raises(ValueError, match="not both"):
        RenderJob(**{**job(1, cast((identity("a"), LEFT))).model_dump(), "identity": identity("b")})
