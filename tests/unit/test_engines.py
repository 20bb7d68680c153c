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
from serve_app.models import TINY_MODEL, ModelNotFound, build_tiny_sdxl, load_sdxl, resolve_model
from serve_app.schemas import AnimateJob, Frames, RenderJob

PICKLE_SUFFIXES = {".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_tiny_sdxl(root / TINY_MODEL)
    return root


@pytest.fixture(scope="module")
def renderer(models_dir: Path) -> RendererEngine:
    return RendererEngine(models_dir, RendererConfig(steps=2, width=64, height=64))


def job(seed: int) -> RenderJob:
    return RenderJob(
        style_id="style-1",
        base_model_ref=TINY_MODEL,
        prompt="penguin, anime, pastel",
        negative_prompt="blurry, lowres",
        seed=seed,
    )


def render(renderer: RendererEngine, seed: int) -> Frames:
    return renderer.render(renderer.load(TINY_MODEL), job(seed))


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

    monkeypatch.setattr("serve_app.models.tempfile.TemporaryDirectory", no_rebuild)
    assert build_tiny_sdxl(dest) == dest
    assert digest(dest) == before
    assert [p.name for p in models_dir.iterdir()] == [TINY_MODEL]  # no staging folder left


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


def test_resolve_model_finds_tags_and_absolute_paths(models_dir: Path) -> None:
    path = models_dir / TINY_MODEL
    assert resolve_model(TINY_MODEL, models_dir) == path
    assert resolve_model(str(path), Path("/nonexistent")) == path


def test_resolve_model_refuses_missing_escaping_and_incomplete(
    models_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(ModelNotFound):
        resolve_model("no-such-model", models_dir)
    # "../escape" is refused even when the folder it points at is a complete model.
    inside = tmp_path / "models"
    shutil.copytree(models_dir / TINY_MODEL, tmp_path / "escape")
    inside.mkdir()
    with pytest.raises(ModelNotFound):
        resolve_model("../escape", inside)
    (inside / "empty").mkdir()
    (inside / "empty" / "unet").mkdir()
    with pytest.raises(ModelNotFound):
        resolve_model("empty", inside)


def test_pickle_only_model_is_refused_without_unpickling(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "pickled"
    shutil.copytree(models_dir / TINY_MODEL, model)
    weights = model / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save(load_file(weights), model / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    assert resolve_model(str(model), models_dir) == model  # it looks like a model folder

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
    assert renderer.load(TINY_MODEL) is renderer.load(TINY_MODEL)
    with pytest.raises(ModelNotFound):
        renderer.load("missing-model")


# Animator.

ANIMATE = AnimateJob(
    base_model_ref=TINY_MODEL, prompt="penguin, anime", negative_prompt="blurry", seed=1
)


def test_animate_returns_the_render_plus_variations(models_dir: Path, rendered: Frames) -> None:
    # strength 0.5 so that 2 steps leave one img2img step.
    config = AnimatorConfig(frames=6, steps=2, batch_size=4, strength=0.5)
    out = AnimatorEngine(models_dir, config).animate(rendered, ANIMATE)
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
