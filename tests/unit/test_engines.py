"""The real diffusers path without Ray, on the tiny SDXL-architecture model (CPU, a few steps)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from deployments.animator import AnimatorConfig, AnimatorEngine
from deployments.renderer import RendererConfig, RendererEngine
from serve_app.diffusion.pipelines import load_sdxl
from serve_app.diffusion.sources import ModelManager, ModelNotFound, UnsafeModelFormat
from serve_app.diffusion.tiny import (
    TINY_CLIP,
    TINY_IP_ADAPTER,
    TINY_LORAS,
    TINY_MODEL,
    TINY_MOTION,
    TINY_VIDEO,
    build_tiny_models,
)
from serve_app.schemas import AnimateJob, Frames, RenderJob, StyleProfile
from serve_app.upscale.weights import TINY_UPSCALERS

PICKLE_SUFFIXES = {".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle"}


@pytest.fixture(scope="module")
def renderer(models_dir: Path) -> RendererEngine:
    return RendererEngine(ModelManager(models_dir), RendererConfig(steps=2, width=64, height=64))


PASTEL, INK = TINY_LORAS


def job(seed: int, lora_ids: list[str] | None = None) -> RenderJob:
    return RenderJob(
        style_id="style-1",
        base_model_ref=TINY_MODEL,
        lora_ids=lora_ids or [],
        prompt="penguin, anime, pastel",
        negative_prompt="blurry, lowres",
        seed=seed,
    )


def render(renderer: RendererEngine, seed: int, lora_ids: list[str] | None = None) -> Frames:
    return renderer.render(job(seed, lora_ids))


@pytest.fixture(scope="module")
def rendered(renderer: RendererEngine) -> Frames:
    return render(renderer, 1)


def digest(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# The tiny model and the model source.


def test_build_is_idempotent(models_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = models_dir / TINY_MODEL
    before = digest(dest)

    def no_rebuild(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an existing model was rebuilt")

    monkeypatch.setattr("serve_app.diffusion.tiny.tempfile.TemporaryDirectory", no_rebuild)
    loras = [models_dir / f"{tag}.safetensors" for tag in TINY_LORAS]
    tags = (TINY_MOTION, TINY_VIDEO, TINY_CLIP, TINY_IP_ADAPTER)
    motion, video, clip, adapter = (models_dir / tag for tag in tags)
    upscalers = [models_dir / f"{tag}.safetensors" for tag in TINY_UPSCALERS]
    assert build_tiny_models(models_dir) == [dest, *loras, motion, video, clip, adapter, *upscalers]
    assert digest(dest) == before
    # Nothing but the model, its LoRAs, motion adapter, SVD, CLIP, IP-Adapter and upscalers: no
    # staging folder left.
    assert sorted(p.name for p in models_dir.iterdir()) == sorted(
        [TINY_MODEL, *(p.name for p in loras), *tags, *(p.name for p in upscalers)]
    )
    assert sorted(p.name for p in motion.iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    assert ModelManager(models_dir).local(TINY_MOTION) == motion


def test_model_folder_holds_only_safetensors_weights(models_dir: Path) -> None:
    files = [p for p in (models_dir / TINY_MODEL).rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in PICKLE_SUFFIXES]
    weights = {p.relative_to(models_dir / TINY_MODEL).as_posix() for p in files}
    weights = {w for w in weights if w.endswith(".safetensors")}
    assert {
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
    } <= weights
    assert {w.split("/")[0] for w in weights} == {"unet", "vae", "text_encoder", "text_encoder_2"}
    assert (models_dir / TINY_MODEL / "model_index.json").is_file()


def test_local_refs_are_tags_or_absolute_paths(models_dir: Path) -> None:
    manager = ModelManager(models_dir)
    path = models_dir / TINY_MODEL
    assert manager.local(TINY_MODEL) == path
    assert ModelManager(Path("/nonexistent")).local(str(path)) == path
    assert manager.local(PASTEL) == models_dir / f"{PASTEL}.safetensors"


def test_local_refs_refuse_missing_escaping_incomplete_and_pickles(
    models_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelNotFound):
        ModelManager(models_dir).local("no-such-model")
    # "../escape" is refused even when the folder it points at is a complete model.
    inside = tmp_path / "models"
    shutil.copytree(models_dir / TINY_MODEL, tmp_path / "escape")
    inside.mkdir()
    with pytest.raises(ModelNotFound):
        ModelManager(inside).local("../escape")
    (inside / "empty").mkdir()
    (inside / "empty" / "unet").mkdir()
    with pytest.raises(ModelNotFound):
        ModelManager(inside).local("empty")
    torch.save({"w": torch.zeros(1)}, inside / "pickled.bin")
    with pytest.raises(UnsafeModelFormat, match="pickle"):
        ModelManager(inside).local(str(inside / "pickled.bin"))
    torch.save({"w": torch.zeros(1)}, inside / "disguised.safetensors")  # a pickle, renamed
    with pytest.raises(UnsafeModelFormat, match="not a safetensors file"):
        ModelManager(inside).local("disguised")


def test_pickle_only_model_is_refused_without_unpickling(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "pickled"
    shutil.copytree(models_dir / TINY_MODEL, model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), model / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    assert ModelManager(models_dir).local(str(model)) == model  # it looks like a model folder

    unpickled: list[Any] = []
    real_load = torch.load

    def recording_load(*args: Any, **kwargs: Any) -> Any:
        unpickled.append(args)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    with pytest.raises(OSError, match="safetensors"):
        load_sdxl(model)
    assert unpickled == []


# Renderer.


def test_render_shape_and_dtype(rendered: Frames) -> None:
    assert rendered.pixels.shape == (1, 64, 64, 3)
    assert rendered.pixels.dtype == np.uint8
    assert rendered.pixels.std() > 0  # not a blank frame


def test_render_is_deterministic_per_seed(renderer: RendererEngine, rendered: Frames) -> None:
    assert np.array_equal(render(renderer, 1).pixels, rendered.pixels)
    assert not np.array_equal(render(renderer, 2).pixels, rendered.pixels)


def test_render_meta(rendered: Frames) -> None:
    meta = rendered.meta
    assert meta["seed"] == 1
    assert meta["steps"] == 2
    assert meta["sampler"] == "EulerDiscreteScheduler"
    assert meta["style_id"] == "style-1"
    assert meta["prompt"] == "penguin, anime, pastel"
    assert meta["negative_prompt"] == "blurry, lowres"
    assert (meta["width"], meta["height"]) == (64, 64)


def test_renderer_loads_a_model_once(renderer: RendererEngine) -> None:
    render(renderer, 1)
    assert renderer.pipelines.base_loads == 1
    with pytest.raises(ModelNotFound):
        renderer.render(job(1).model_copy(update={"base_model_ref": "missing-model"}))


# Soul styles: LoRA sets switched on one base pipeline.


def test_lora_sets_change_the_image_from_the_same_seed_and_cue(
    renderer: RendererEngine, rendered: Frames
) -> None:
    pastel, ink = render(renderer, 1, [PASTEL]), render(renderer, 1, [INK])
    half_ink = render(renderer, 1, [f"{INK}=0.5"])
    images = [rendered.pixels, pastel.pixels, ink.pixels, half_ink.pixels]
    for i, a in enumerate(images):
        for b in images[i + 1 :]:
            assert np.abs(a.astype(int) - b.astype(int)).mean() > 5.0
    assert ink.meta["lora_ids"] == [INK]


def test_one_replica_swaps_styles_without_reloading_the_base_model(
    models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = RendererEngine(ModelManager(models_dir), RendererConfig(steps=2, width=64, height=64))
    first = {name: render(engine, 3, loras).pixels for name, loras in STYLES.items()}
    pipe = engine.pipelines.base(TINY_MODEL)
    lora_loads: list[str] = []
    real_load = pipe.load_lora_weights
    monkeypatch.setattr(
        pipe,
        "load_lora_weights",
        lambda *a, **k: lora_loads.append(k["adapter_name"]) or real_load(*a, **k),
    )
    for _ in range(2):
        for name, loras in STYLES.items():
            assert np.array_equal(render(engine, 3, loras).pixels, first[name]), name
    assert engine.pipelines.base_loads == 1
    assert lora_loads == []  # every switch was set_adapters on what was loaded


def test_least_recently_used_loras_are_unloaded_past_the_limit(models_dir: Path) -> None:
    config = RendererConfig(steps=2, width=64, height=64, max_loras=1)
    engine = RendererEngine(ModelManager(models_dir), config)
    before = render(engine, 4, [PASTEL]).pixels
    render(engine, 4, [INK])
    assert engine.pipelines.base(TINY_MODEL).get_list_adapters() == {"unet": [adapter(INK)]}
    assert np.array_equal(render(engine, 4, [PASTEL]).pixels, before)  # loaded again, same image
    assert engine.pipelines.base_loads == 1


STYLES = {"plain": [], "pastel": [PASTEL], "ink": [f"{INK}=0.8"], "both": [PASTEL, INK]}


def adapter(ref: str) -> str:
    from serve_app.diffusion.pipelines import adapter_name

    return adapter_name(ref)


# Animator.

ANIMATE = AnimateJob(
    base_model_ref=TINY_MODEL, prompt="penguin, anime", negative_prompt="blurry", seed=1
)


def test_animate_returns_the_render_plus_variations(models_dir: Path, rendered: Frames) -> None:
    # strength 0.5 so that 2 steps leave one img2img step.
    config = AnimatorConfig(frames=6, steps=2, batch_size=4, strength=0.5)
    out = AnimatorEngine(ModelManager(models_dir), config).animate(rendered, ANIMATE)
    assert out.pixels.shape == (6, 64, 64, 3)
    assert out.pixels.dtype == np.uint8
    assert np.array_equal(out.pixels[0], rendered.pixels[0])
    assert not np.array_equal(out.pixels[1], out.pixels[0])
    assert out.meta["frames"] == 6
    assert out.meta["seed"] == 1 and out.meta["animation"] == "subtle"


def test_animator_config_refuses_settings_that_leave_no_denoising_step() -> None:
    with pytest.raises(ValidationError, match="steps \\* strength"):
        AnimatorConfig(frames=6, steps=2, strength=0.3)  # int(2 * 0.3) == 0 img2img steps
    assert AnimatorConfig(frames=6, steps=4, strength=0.3).steps == 4


def test_animator_applies_the_souls_lora_set(models_dir: Path, rendered: Frames) -> None:
    engine = AnimatorEngine(
        ModelManager(models_dir), AnimatorConfig(frames=6, steps=2, batch_size=4, strength=0.5)
    )
    plain = engine.animate(rendered, ANIMATE)
    styled = engine.animate(rendered, ANIMATE.model_copy(update={"lora_ids": [INK]}))
    assert np.array_equal(styled.pixels[0], plain.pixels[0])  # the render itself is kept
    assert np.abs(styled.pixels[1:].astype(int) - plain.pixels[1:].astype(int)).mean() > 2.0
    assert np.array_equal(engine.animate(rendered, ANIMATE).pixels, plain.pixels)  # switched off


# Animator, "animated" mode: AnimateDiff with the soul's motion module.

ANIMATED = ANIMATE.model_copy(update={"mode": "animated", "motion_module": TINY_MOTION})


@pytest.fixture(scope="module")
def animator(models_dir: Path) -> AnimatorEngine:
    return AnimatorEngine(
        ModelManager(models_dir), AnimatorConfig(frames=6, steps=2, batch_size=4, strength=0.5)
    )


@pytest.fixture(scope="module")
def animated(animator: AnimatorEngine, rendered: Frames) -> Frames:
    return animator.animate(rendered, ANIMATED)


def test_animated_mode_returns_distinct_frames_at_the_render_size(
    animator: AnimatorEngine, animated: Frames
) -> None:
    assert animated.pixels.shape == (6, 64, 64, 3)
    assert animated.pixels.dtype == np.uint8
    steps = np.abs(np.diff(animated.pixels.astype(int), axis=0)).mean(axis=(1, 2, 3))
    assert (steps > 1.0).all()  # each frame differs from the one before
    wide = Frames(pixels=np.zeros((1, 32, 48, 3), np.uint8), meta={"seed": 1})
    assert animator.animate(wide, ANIMATED).pixels.shape == (6, 32, 48, 3)


def test_animated_meta(animated: Frames) -> None:
    meta = animated.meta
    assert meta["animation"] == "animated" and meta["motion_module"] == TINY_MOTION
    assert meta["frames"] == 6 and meta["animate_steps"] == 2
    assert meta["seed"] == 1 and meta["prompt"] == "penguin, anime, pastel"  # the render's meta
    assert "strength" not in meta


def test_animated_mode_is_deterministic_per_seed(
    animator: AnimatorEngine, rendered: Frames, animated: Frames
) -> None:
    assert np.array_equal(animator.animate(rendered, ANIMATED).pixels, animated.pixels)
    other = animator.animate(rendered, ANIMATED.model_copy(update={"seed": 2}))
    assert not np.array_equal(other.pixels, animated.pixels)


def test_motion_pipeline_is_loaded_once_and_shares_the_base(
    animator: AnimatorEngine, rendered: Frames
) -> None:
    for job in (ANIMATED, ANIMATE, ANIMATED.model_copy(update={"lora_ids": [PASTEL]})):
        animator.animate(rendered, job)
    pipelines = animator.pipelines
    assert (pipelines.base_loads, pipelines.motion_loads) == (1, 1)
    motion, base = pipelines.motion(TINY_MODEL, TINY_MOTION), pipelines.base(TINY_MODEL)
    assert type(motion.unet).__name__ == "UNetMotionModel"
    assert motion.text_encoder_2 is base.text_encoder_2 and motion.vae is base.vae


def test_the_motion_unet_holds_every_weight_of_the_base_unet(
    models_dir: Path, animator: AnimatorEngine
) -> None:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(models_dir / TINY_MODEL, subfolder="unet")
    motion = animator.pipelines.motion(TINY_MODEL, TINY_MOTION).unet.state_dict()
    shared = [k for k in unet.state_dict() if k in motion]
    assert any(k.startswith("add_embedding.") for k in shared)  # SDXL's text-time embedding
    assert [k for k in shared if not torch.equal(unet.state_dict()[k], motion[k])] == []


def test_animated_mode_applies_the_souls_lora_set(
    animator: AnimatorEngine, rendered: Frames, animated: Frames
) -> None:
    styled = animator.animate(rendered, ANIMATED.model_copy(update={"lora_ids": [INK]}))
    assert np.abs(styled.pixels.astype(int) - animated.pixels.astype(int)).mean() > 2.0
    assert np.array_equal(animator.animate(rendered, ANIMATED).pixels, animated.pixels)  # off


def test_a_motion_pipeline_built_later_gets_the_loras_already_loaded(
    models_dir: Path, animator: AnimatorEngine, rendered: Frames
) -> None:
    ink = ANIMATED.model_copy(update={"lora_ids": [INK]})
    config = AnimatorConfig(frames=6, steps=2, batch_size=4, strength=0.5)
    engine = AnimatorEngine(ModelManager(models_dir), config)
    engine.animate(rendered, ANIMATE.model_copy(update={"lora_ids": [INK]}))  # INK loaded first
    assert np.array_equal(
        engine.animate(rendered, ink).pixels, animator.animate(rendered, ink).pixels
    )


def test_the_style_picks_the_animation_and_animated_needs_a_motion_module() -> None:
    style = {"soul_id": "valentina", "base_model_ref": TINY_MODEL}
    assert StyleProfile.model_validate(style).animation == "subtle"
    animated = {**style, "motion_module": TINY_MOTION, "extra": {"animation": "animated"}}
    assert StyleProfile.model_validate(animated).animation == "animated"
    with pytest.raises(ValidationError, match="needs a motion_module"):
        StyleProfile.model_validate({**style, "extra": {"animation": "animated"}})
    with pytest.raises(ValidationError, match='must be "subtle", "animated" or "video"'):
        StyleProfile.model_validate({**animated, "extra": {"animation": "wobbly"}})
    video = StyleProfile.model_validate({**style, "extra": {"animation": "video"}})
    assert video.animation == "video"  # image-to-video needs no motion module


def test_unknown_or_unsafe_motion_modules_are_refused(
    models_dir: Path, animator: AnimatorEngine, rendered: Frames, tmp_path: Path
) -> None:
    def animate(motion_module: str | None) -> Frames:
        return animator.animate(
            rendered, ANIMATED.model_copy(update={"motion_module": motion_module})
        )

    with pytest.raises(ModelNotFound):
        animate("no-such-motion")
    with pytest.raises(ModelNotFound, match="needs a motion_module"):
        animate(None)
    with pytest.raises(ModelNotFound, match="MotionAdapter folder"):
        animate(INK)  # a safetensors file, but a LoRA
    torch.save({"w": torch.zeros(1)}, tmp_path / "mm_sdxl.ckpt")
    with pytest.raises(UnsafeModelFormat, match="pickle"):
        animate(str(tmp_path / "mm_sdxl.ckpt"))
    pickled = tmp_path / "pickled-motion"
    shutil.copytree(models_dir / TINY_MOTION, pickled)
    weights = pickled / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), pickled / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(UnsafeModelFormat, match="no safetensors"):
        animate(str(pickled))
    assert animator.pipelines.motion_loads == 1


def test_least_recently_used_loras_leave_the_motion_pipeline_too(
    models_dir: Path, rendered: Frames
) -> None:
    engine = AnimatorEngine(
        ModelManager(models_dir), AnimatorConfig(frames=6, steps=2, batch_size=4, strength=0.5)
    )
    engine.pipelines.max_loras = 1
    before = engine.animate(rendered, ANIMATED.model_copy(update={"lora_ids": [PASTEL]})).pixels
    engine.animate(rendered, ANIMATED.model_copy(update={"lora_ids": [INK]}))
    motion = engine.pipelines.motion(TINY_MODEL, TINY_MOTION)
    assert motion.unet.peft_config.keys() == {adapter(INK)}
    again = engine.animate(rendered, ANIMATED.model_copy(update={"lora_ids": [PASTEL]})).pixels
    assert np.array_equal(again, before)  # loaded again, same frames


def test_derived_pipelines_keep_the_configured_dtype(models_dir: Path) -> None:
    config = AnimatorConfig(frames=6, steps=2, strength=0.5, dtype="bfloat16")
    engine = AnimatorEngine(ModelManager(models_dir), config)
    img2img = engine.pipelines.img2img(TINY_MODEL)
    motion = engine.pipelines.motion(TINY_MODEL, TINY_MOTION)
    base = engine.pipelines.base(TINY_MODEL)
    modules = (base.unet, base.text_encoder, base.vae, img2img.unet, motion.unet)
    assert {m.dtype for m in modules} == {torch.bfloat16}


def test_xformers_attention_is_opt_in_and_fails_clearly_without_it(models_dir: Path) -> None:
    assert RendererConfig().attention == "sdpa"
    with pytest.raises((ModuleNotFoundError, ValueError), match=r"xformers|CUDA|cuda"):
        load_sdxl(models_dir / TINY_MODEL, RendererConfig(attention="xformers"))


def test_video_mode_moves_the_render_through_stable_video_diffusion(
    animator: AnimatorEngine, rendered: Frames
) -> None:
    """The tiny SVD (its spatio-temporal UNet, temporal VAE and CLIP vision encoder, loaded
    through from_pretrained) makes the frames asked for, at the render's size, per seed."""
    job = ANIMATE.model_copy(update={"mode": "video", "frames": 7})
    clip = animator.animate(rendered, job)
    assert clip.pixels.shape == (7, *rendered.pixels.shape[1:])
    assert (clip.meta["animation"], clip.meta["frames"]) == ("video", 7)
    assert clip.meta["video_model"] == TINY_VIDEO and clip.meta["seed"] == rendered.meta["seed"]
    assert len({frame.tobytes() for frame in clip.pixels}) > 1  # it moves
    assert np.array_equal(clip.pixels, animator.animate(rendered, job).pixels)
    other = animator.animate(rendered, job.model_copy(update={"seed": job.seed + 1}))
    assert not np.array_equal(clip.pixels, other.pixels)
    default = animator.animate(rendered, job.model_copy(update={"frames": None}))
    assert len(default.pixels) == animator.config.frames
