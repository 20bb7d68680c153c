"""The Renderer on the tiny SDXL model (no Ray): img2img from a soul's reference image, and
batched renders that give each job the picture it gets alone."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from deployments.renderer import (
    EveryCallerLeft,
    RendererConfig,
    RendererEngine,
    RenderInterrupted,
    WaitingRender,
)
from serve_app.diffusion.sizes import render_size
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_LORAS, TINY_MODEL, build_tiny_lora, build_tiny_sdxl
from serve_app.errors import InvalidRequest
from serve_app.schemas import RENDER_FACTS, Frames, RenderJob
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


def job(
    seed: int,
    strength: float | None = None,
    lora_ids: tuple[str, ...] = (),
    prompt: str = "penguin, anime, pastel",
    negative_prompt: str = "blurry",
    reference: str = REFERENCE,
) -> RenderJob:
    return RenderJob(
        style_id="style-1",
        base_model_ref=TINY_MODEL,
        lora_ids=list(lora_ids),
        prompt=prompt,
        negative_prompt=negative_prompt,
        seed=seed,
        reference_key=reference if strength else None,
        reference_strength=strength,
    )


def render(
    renderer: RendererEngine,
    seed: int,
    strength: float | None = None,
    lora_ids: tuple[str, ...] = (),
) -> Frames:
    return renderer.render(job(seed, strength, lora_ids))


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


def mean_abs_diff(a: Frames, b: Frames) -> float:
    return float(np.abs(a.pixels.astype(int) - b.pixels.astype(int)).mean())


BATCH = [
    job(11, prompt="penguin on a skateboard"),
    job(12, prompt="fox in the snow"),
    job(13, prompt="owl at night", negative_prompt=""),  # no negative prompt: a call of its own
    job(14, strength=0.6),
    job(15, strength=0.6, prompt="cat on a roof"),
    job(16, lora_ids=(INK,), prompt="robot in the rain"),
]


def test_a_batch_gives_each_job_the_picture_it_gets_alone(renderer: RendererEngine) -> None:
    calls = []

    def on_step(step: int, _total: int) -> None:
        if step == 1:  # a pipeline call began
            calls.append(step)

    outcomes = renderer.render_batch(BATCH, on_step)
    pictures = [outcome for outcome in outcomes if isinstance(outcome, Frames)]
    assert len(pictures) == len(BATCH), outcomes
    for member, picture in zip(BATCH, pictures, strict=True):
        alone = renderer.render(member)
        assert picture.pixels.shape == alone.pixels.shape == (1, 64, 64, 3)
        assert mean_abs_diff(picture, alone) < 1.0, member  # under 1/255 of the range
        # What animating its cover again carries over, and its share of the call's seconds.
        assert tuple(picture.meta) == (*RENDER_FACTS, "render_s")
        assert {**picture.meta, "render_s": 0} == {**alone.meta, "render_s": 0}
        assert picture.meta["render_s"] > 0
    # four pipeline calls: the two plain jobs, the one without a negative prompt, the two
    # referenced ones, the inked one
    assert len(calls) == 4
    assert all(differ(a, b) for a, b in itertools.combinations(pictures, 2))


def test_a_job_whose_reference_is_missing_fails_alone(renderer: RendererEngine) -> None:
    missing = job(21, strength=0.6, reference="soul/nova/reference/gone.png")
    outcomes = renderer.render_batch([job(20, strength=0.6), missing, job(22)])
    assert isinstance(outcomes[0], Frames) and isinstance(outcomes[2], Frames)
    assert isinstance(outcomes[1], Exception) and not isinstance(outcomes[1], Frames)
    with pytest.raises(type(outcomes[1])):
        renderer.render(missing)


def test_a_failed_batched_call_renders_its_jobs_one_by_one(
    renderer: RendererEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Say the device runs out of memory for the batch: each job still gets its picture."""
    pipe = renderer.pipelines.base(TINY_MODEL)
    call = type(pipe).__call__

    def small_batches_only(self: object, *args: object, **kwargs: object) -> object:
        prompts = kwargs["prompt"]
        if isinstance(prompts, list) and len(prompts) > 1:
            raise RuntimeError("out of memory (a batch of more than one)")
        return call(self, *args, **kwargs)

    monkeypatch.setattr(type(pipe), "__call__", small_batches_only)
    jobs = BATCH[:2]
    outcomes = renderer.render_batch(jobs)
    monkeypatch.undo()
    for member, outcome in zip(jobs, outcomes, strict=True):
        assert isinstance(outcome, Frames), outcome
        assert mean_abs_diff(outcome, renderer.render(member)) < 1.0


def test_a_batch_stops_only_once_every_caller_left(renderer: RendererEngine) -> None:
    calls = [WaitingRender(member) for member in BATCH[:2]]
    stop = EveryCallerLeft(calls)
    calls[0].left.set()
    assert not stop.is_set()  # the other caller still wants its picture

    def leave(step: int, _total: int) -> None:
        if step == 2:
            calls[1].left.set()

    outcomes = renderer.render_batch([call.job for call in calls], leave, stop)
    assert all(isinstance(outcome, RenderInterrupted) for outcome in outcomes)


def test_an_aspect_renders_at_the_configured_area_and_batches_apart(
    renderer: RendererEngine,
) -> None:
    wide = job(3).model_copy(update={"aspect": "16:9"})
    tall = job(4).model_copy(update={"aspect": "3:4"})
    square = job(5)
    out = renderer.render_batch([wide, tall, square, wide.model_copy(update={"seed": 6})])
    assert [f.pixels.shape for f in out if isinstance(f, Frames)] == [
        (1, 48, 88, 3),  # 64²'s area at 16:9, each side a multiple of 8
        (1, 72, 56, 3),
        (1, 64, 64, 3),  # no aspect: exactly the configured size
        (1, 48, 88, 3),
    ]
    first = out[0]
    assert isinstance(first, Frames)
    assert (first.meta["width"], first.meta["height"]) == (88, 48)
    assert np.array_equal(first.pixels, renderer.render(wide).pixels)  # batched as alone


def test_an_aspect_the_renderer_cannot_render_fails_its_job_alone(
    renderer: RendererEngine,
) -> None:
    config = renderer.config
    renderer.configure(config.model_copy(update={"max_side": 64}))
    try:
        wide, square = job(3).model_copy(update={"aspect": "16:9"}), job(4)
        refused, rendered = renderer.render_batch([wide, square])
    finally:
        renderer.configure(config)
    assert isinstance(refused, InvalidRequest) and refused.status_code == 422
    assert "'16:9' renders at 88x48" in str(refused) and "32 to 64 px" in str(refused)
    assert isinstance(rendered, Frames) and rendered.pixels.shape == (1, 64, 64, 3)


def test_an_aspect_is_w_colon_h_at_most_four_to_one() -> None:
    assert render_size("16:9", (1024, 1024), 2048) == (1368, 768)
    assert render_size("4:3", (1024, 1024), 2048) == (1184, 888)
    assert render_size(None, (64, 64), 64) == (64, 64)
    for bad in ("16x9", "0:1", "16:9:1", "9:1"):
        with pytest.raises(ValidationError):
            job(1).model_validate({**job(1).model_dump(), "aspect": bad})
