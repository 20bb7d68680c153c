"""Unit tests for deployments.dedupe: pHash as signed int64, Hamming distance, the verdict, and
the CLIP filter over the tiny CLIP on the tiny model's renders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployments.dedupe import DedupeConfig, DedupeEngine, hamming, phash64
from deployments.renderer import RendererEngine
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_CLIP, TINY_MODEL
from serve_app.schemas import Fingerprint, Frames, RenderJob

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def scene(kind: int, size: int = 128) -> np.ndarray:
    """An (H, W, 3) uint8 picture with gradients and a block: two kinds look nothing alike."""
    y, x = np.mgrid[0:size, 0:size]
    if kind == 0:
        img = np.stack([x * 2, y * 2, x + y], axis=-1)
        img[30:70, 40:100] = [250, 30, 30]
    else:
        img = np.stack([255 - y * 2, (x * y) % 256, 255 - x * 2], axis=-1)
        img[80:120, 10:50] = [20, 200, 40]
    return np.clip(img, 0, 255).astype(np.uint8)


def noisy(img: np.ndarray, amplitude: int = 6, seed: int = 0) -> np.ndarray:
    noise = np.random.default_rng(seed).integers(-amplitude, amplitude + 1, img.shape)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def frames(img: np.ndarray) -> Frames:
    return Frames(pixels=img[None])


def hashed(*values: int) -> list[Fingerprint]:
    return [Fingerprint(phash=value) for value in values]


@pytest.mark.parametrize("value", [0, 1, -1, INT64_MIN, INT64_MAX, 0x0123456789ABCDEF])
def test_hamming_basics(value: int) -> None:
    assert hamming(value, value) == 0
    assert hamming(value, ~value) == 64
    assert hamming(value, value ^ 0b1011) == 3
    assert hamming(value, 12345) == hamming(12345, value)


def test_hamming_treats_signed_and_unsigned_forms_alike() -> None:
    assert hamming(-1, 2**64 - 1) == 0
    assert hamming(INT64_MIN, 0) == 1


def test_phash64_fits_int64_and_is_stable() -> None:
    for kind in (0, 1):
        value = phash64(frames(scene(kind)))
        assert INT64_MIN <= value <= INT64_MAX
        assert phash64(frames(scene(kind).copy())) == value


def test_phash64_uses_the_first_frame() -> None:
    stack = Frames(pixels=np.stack([scene(0), scene(1)]))
    assert phash64(stack) == phash64(frames(scene(0)))


def test_check_without_existing_is_not_a_duplicate() -> None:
    verdict = DedupeEngine().check(frames(scene(0)), [])
    assert verdict.min_distance is None
    assert not verdict.duplicate
    assert verdict.phash == phash64(frames(scene(0)))


def test_slightly_perturbed_image_is_a_duplicate() -> None:
    engine = DedupeEngine()
    original = phash64(frames(scene(0)))
    verdict = engine.check(frames(noisy(scene(0))), hashed(original))
    assert verdict.duplicate
    assert verdict.min_distance is not None and verdict.min_distance < engine.config.threshold


def test_very_different_image_is_not_a_duplicate() -> None:
    verdict = DedupeEngine().check(frames(scene(1)), hashed(phash64(frames(scene(0)))))
    assert not verdict.duplicate
    assert verdict.min_distance is not None and verdict.min_distance >= 6


def test_min_distance_is_over_all_existing() -> None:
    a, b = phash64(frames(scene(0))), phash64(frames(scene(1)))
    verdict = DedupeEngine().check(frames(scene(1)), hashed(a, b))
    assert verdict.min_distance == 0 and verdict.duplicate


def test_threshold_is_configurable() -> None:
    existing = phash64(frames(scene(0)))
    distance = hamming(phash64(frames(scene(1))), existing)
    known = hashed(existing)
    above = DedupeEngine(DedupeConfig(threshold=distance + 1)).check(frames(scene(1)), known)
    assert above.duplicate
    at = DedupeEngine(DedupeConfig(threshold=distance)).check(frames(scene(1)), known)
    assert not at.duplicate  # "below" the threshold: equal is not a duplicate
    never = DedupeEngine(DedupeConfig(threshold=0)).check(frames(scene(0)), known)
    assert never.min_distance == 0 and not never.duplicate


def test_the_clip_filter_catches_re_encoded_copies_that_phash_lets_through(
    renderer: RendererEngine, models_dir: Path
) -> None:
    # At the fixture's 64x64 renders, the tiny CLIP puts JPEG q30 copies within 0.02 of their
    # original and distinct renders 0.045 apart or more (soul bench dedupe: 128x128 ones).
    engine = DedupeEngine(
        DedupeConfig(clip_model=TINY_CLIP, clip_distance=0.03), ModelManager(models_dir)
    )
    renders = [renderer.render(render_job(seed)) for seed in range(8)]
    originals = [engine.check(picture, []) for picture in renders]
    known = [verdict.fingerprint for verdict in originals]
    for i, picture in enumerate(renders):  # no two distinct renders are duplicates
        verdict = engine.check(picture, known[:i] + known[i + 1 :])
        assert not verdict.duplicate and verdict.clip_distance is not None
        assert verdict.clip_distance >= 0.03 and verdict.embed_model == TINY_CLIP

    copies = [
        engine.check(frames(jpeg(picture.pixels[0], 30)), [original])
        for picture, original in zip(renders, known, strict=True)
    ]
    let_through = [c for c in copies if c.min_distance is not None and c.min_distance >= 6]
    assert let_through, "no re-encoded copy got past pHash: the case is not constructed"
    assert all(c.duplicate and c.clip_distance is not None for c in let_through)
    assert all(c.clip_distance < 0.03 for c in copies)  # caught, whatever pHash said


def test_a_sibling_embedded_by_another_model_is_not_compared(
    renderer: RendererEngine, models_dir: Path
) -> None:
    engine = DedupeEngine(
        DedupeConfig(clip_model=TINY_CLIP, clip_distance=2.0), ModelManager(models_dir)
    )
    picture = renderer.render(render_job(1))
    other = engine.check(picture, []).fingerprint.model_copy(update={"embed_model": "other"})
    verdict = engine.check(picture, [other.model_copy(update={"phash": None})])
    assert verdict.clip_distance is None and not verdict.duplicate


def render_job(seed: int) -> RenderJob:
    return RenderJob(
        style_id="s",
        base_model_ref=TINY_MODEL,
        prompt="penguin, anime, pastel",
        negative_prompt="blurry",
        seed=seed,
    )


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB"))
