"""Renderer img2img from a soul's reference image, on the tiny SDXL model (no Ray)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deployments.renderer import RendererConfig, RendererEngine
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_LORAS, TINY_MODEL, build_tiny_lora, build_tiny_sdxl
from serve_app.schemas import Frames, RenderJob
from serve_app.storage.local import LocalObjectStore, MediaSigner

REFERENCE = "soul/nova/reference/01JDQ4Z5V8.png"
INK = "tiny-lora-ink"


@pytest.fixture(scope="module")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> RendererEngine:
    root = tmp_path_factory.mktemp("reference")
    base = build_tiny_sdxl(root / "models" / TINY_MODEL)
    build_tiny_lora(root / "models" / f"{INK}.safetensors", base, TINY_LORAS[INK])
    objects = LocalObjectStore(str(root / "objects"), MediaSigner(b"k"))
    pixels = np.random.default_rng(0).integers(0, 256, (50, 100, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")  # 100x50: cropped and scaled to 64x64
    objects.put(REFERENCE, png.getvalue())
    config = RendererConfig(steps=2, width=64, height=64)
    return RendererEngine(ModelManager(root / "models"), config, objects=objects)


def render(
    renderer: RendererEngine,
    seed: int,
    strength: float | None = None,
    lora_ids: tuple[str, ...] = (),
) -> Frames:
    return renderer.render(
        RenderJob(
            style_id="style-1",
            base_model_ref=TINY_MODEL,
            lora_ids=list(lora_ids),
            prompt="penguin, anime, pastel",
            negative_prompt="blurry",
            seed=seed,
            reference_key=REFERENCE if strength else None,
            reference_strength=strength,
        )
    )


def differ(a: Frames, b: Frames) -> bool:
    return bool(np.abs(a.pixels.astype(int) - b.pixels.astype(int)).mean() > 2.0)


def test_a_reference_changes_the_render_of_the_same_seed(renderer: RendererEngine) -> None:
    plain, referenced = render(renderer, 1), render(renderer, 1, strength=0.6)
    assert referenced.pixels.shape == plain.pixels.shape == (1, 64, 64, 3)
    assert differ(plain, referenced)
    assert (plain.meta["reference_key"], plain.meta["reference_strength"]) == (None, None)
    assert referenced.meta["reference_key"] == REFERENCE
    assert referenced.meta["reference_strength"] == 0.6


def test_reference_renders_are_deterministic_per_seed(renderer: RendererEngine) -> None:
    first = render(renderer, 7, strength=0.6)
    assert np.array_equal(first.pixels, render(renderer, 7, strength=0.6).pixels)
    assert differ(first, render(renderer, 8, strength=0.6))
    assert differ(first, render(renderer, 7, strength=0.3))  # still at least one step


def test_reference_renders_keep_the_styles_lora_active(renderer: RendererEngine) -> None:
    bare = render(renderer, 3, strength=0.8)
    inked = render(renderer, 3, strength=0.8, lora_ids=(INK,))
    assert differ(bare, inked)
    assert np.array_equal(bare.pixels, render(renderer, 3, strength=0.8).pixels)  # LoRA off again


def test_a_renderer_without_an_object_store_refuses_references(tmp_path: Path) -> None:
    engine = RendererEngine(ModelManager(tmp_path))
    with pytest.raises(ValueError, match="no object store"):
        render(engine, 1, strength=0.5)
