"""Pipelines: SDXL base models loaded once per replica, their AnimateDiff versions (one per motion
module), soul LoRA sets switched on them, their img2img views, and image-to-video models."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from serve_app.diffusion.sources import ModelManager, ModelNotFound, parse_lora
from serve_app.settings import ModelSettings


def configure_torch(models: ModelSettings) -> None:
    """Per-replica torch threads: replicas share the node's cores."""
    if models.torch_threads:
        import torch

        torch.set_num_threads(models.torch_threads)


class DiffusionConfig(BaseModel):
    """What every diffusers call of a replica shares (Renderer and Animator)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(default=8, ge=1, le=150, description="Denoising steps.")
    guidance_scale: float = Field(
        default=5.0,
        ge=0.0,
        le=30.0,
        description="Classifier-free guidance: how strongly the prompt and negatives steer each "
        'denoising step (1 or less: off). Mode "video" uses it as its highest guidance, at '
        "least 1.",
    )
    device: Literal["cpu", "cuda"] = Field(
        default="cpu", description="Where pipelines loaded from now on run."
    )
    dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="Weights dtype of pipelines loaded from now on."
    )
    attention: Literal["sdpa", "xformers"] = Field(
        default="sdpa",
        description="Attention kernels of pipelines loaded from now on: PyTorch SDPA, or "
        "xformers (the `gpu` extra; CUDA only).",
    )


def torch_dtype(config: DiffusionConfig) -> Any:
    import torch

    return getattr(torch, config.dtype)


# transformers and diffusers build a model's modules under a process-wide device context (the
# meta device) while they load it: two loads at once in one process (two engines, each from its
# own thread) can leave one model with weights on meta ("Cannot copy out of meta tensor"). Every
# load from disk takes this lock.
LOADING = threading.RLock()


def _local_weights(config: DiffusionConfig) -> dict[str, Any]:
    """``from_pretrained`` arguments of every load: local files, safetensors only."""
    return {"use_safetensors": True, "dtype": torch_dtype(config), "local_files_only": True}


def load_sdxl(path: Path, config: DiffusionConfig | None = None) -> Any:
    """Load an SDXL pipeline from a diffusers folder, refusing anything but safetensors."""
    from diffusers import StableDiffusionXLPipeline

    config = config or DiffusionConfig()
    with LOADING:
        pipe = StableDiffusionXLPipeline.from_pretrained(path, **_local_weights(config))
        pipe = pipe.to(config.device)
    pipe.set_progress_bar_config(disable=True)
    if config.attention == "xformers":  # raises clearly where xformers or CUDA is missing
        pipe.enable_xformers_memory_efficient_attention()
    return pipe


def load_video(path: Path, config: DiffusionConfig) -> Any:
    """A Stable Video Diffusion (image-to-video) pipeline from a diffusers folder."""
    from diffusers import StableVideoDiffusionPipeline

    with LOADING:
        pipe = StableVideoDiffusionPipeline.from_pretrained(path, **_local_weights(config))
        pipe = pipe.to(config.device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_animatediff(base: Any, base_path: Path, adapter: Path, config: DiffusionConfig) -> Any:
    """An AnimateDiff SDXL pipeline sharing ``base``'s text encoders, VAE and scheduler, with a
    UNetMotionModel: the base UNet's weights plus the motion adapter's temporal layers."""
    from diffusers import (
        AnimateDiffSDXLPipeline,
        MotionAdapter,
        UNet2DConditionModel,
        UNetMotionModel,
    )

    weights = _local_weights(config)
    # A fresh UNet from disk: the base's may carry PEFT LoRA layers, which from_unet2d cannot copy.
    with LOADING:
        unet2d = UNet2DConditionModel.from_pretrained(base_path, subfolder="unet", **weights)
        motion = MotionAdapter.from_pretrained(adapter, **weights)
    unet = UNetMotionModel.from_unet2d(unet2d, motion)
    # from_unet2d (diffusers 0.42) leaves SDXL's text-time embedding randomly initialised.
    unet.add_embedding.load_state_dict(unet2d.add_embedding.state_dict())
    # The adapter's weights now live in the UNet: not keeping it saves its memory. The explicit
    # dtype matters: from_pipe casts every shared module to float32 otherwise.
    pipe = AnimateDiffSDXLPipeline.from_pipe(
        base, unet=unet, motion_adapter=None, dtype=weights["dtype"]
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(config.device)


def load_unet_lora(pipe: Any, path: Path, name: str) -> None:
    """Only the UNet part of a LoRA: a motion pipeline's text encoders are its base's, which
    already hold the adapter."""
    state_dict, alphas, metadata = pipe.lora_state_dict(
        str(path), unet_config=pipe.unet.config, return_lora_metadata=True
    )
    pipe.load_lora_into_unet(
        state_dict, network_alphas=alphas, unet=pipe.unet, adapter_name=name, metadata=metadata
    )


def adapter_name(ref: str) -> str:
    """A stable adapter name for a LoRA ref (PEFT names must be plain identifiers)."""
    return "lora_" + hashlib.sha1(ref.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class LoadedStyle:
    """A pipeline (a base or its motion pipeline) plus the adapters (name, weight) a style
    switches on in it."""

    pipe: Any
    adapters: tuple[tuple[str, float], ...]


class StylePipelines:
    """Base pipelines by model ref, loaded once; LoRAs loaded into them once as named adapters
    and switched per call (``set_adapters``), so changing style never reloads the base model.
    At most ``max_loras`` adapters stay loaded per base model; the least recently used go.
    A base's motion pipelines (AnimateDiff, one per motion module) carry the same adapters.

    Not thread-safe by itself: callers hold ``lock`` around ``style`` and any pipeline call.
    """

    def __init__(self, manager: ModelManager, config: DiffusionConfig, max_loras: int = 8) -> None:
        self.manager = manager
        self.config = config
        self.max_loras = max_loras
        self.lock = threading.RLock()
        self.base_loads = 0
        self.motion_loads = 0
        self._bases: dict[str, Any] = {}
        # base ref -> adapter name -> its LoRA file, least recently used first
        self._recent: dict[str, OrderedDict[str, Path]] = {}
        self._motions: dict[str, dict[str, Any]] = {}  # base ref -> motion ref -> pipeline
        self._img2img: dict[str, Any] = {}  # base ref -> the base as img2img
        self._videos: dict[str, Any] = {}  # image-to-video model ref -> its pipeline

    def base(self, base_model_ref: str) -> Any:
        if base_model_ref not in self._bases:
            path = self.manager.ensure(base_model_ref)
            if not (path / "model_index.json").is_file():
                raise ModelNotFound(
                    f"base model {base_model_ref!r} must be a diffusers folder "
                    "(single-file checkpoints are not loaded yet)"
                )
            self._bases[base_model_ref] = load_sdxl(path, self.config)
            self._recent[base_model_ref] = OrderedDict()
            self._motions[base_model_ref] = {}
            self.base_loads += 1
        return self._bases[base_model_ref]

    def motion(self, base_model_ref: str, motion_ref: str) -> Any:
        """The base as AnimateDiff with a motion module (a diffusers MotionAdapter folder), built
        once per pair, with the base's loaded LoRAs."""
        base = self.base(base_model_ref)
        motions = self._motions[base_model_ref]
        if motion_ref not in motions:
            path = self.manager.ensure(motion_ref)
            if not (path / "config.json").is_file():
                raise ModelNotFound(
                    f"motion module {motion_ref!r} must be a diffusers MotionAdapter folder "
                    "(config.json and safetensors)"
                )
            pipe = load_animatediff(base, self.manager.ensure(base_model_ref), path, self.config)
            for name, lora in self._recent[base_model_ref].items():
                load_unet_lora(pipe, lora, name)
            motions[motion_ref] = pipe
            self.motion_loads += 1
        return motions[motion_ref]

    def img2img(self, base_model_ref: str) -> Any:
        """The base as img2img, built once: ``from_pipe`` shares its modules, LoRA adapters
        included, so what ``activate`` switched on applies here too."""
        from diffusers import StableDiffusionXLImg2ImgPipeline

        if base_model_ref not in self._img2img:
            # from_pipe casts the shared modules to float32 unless told the configured dtype.
            pipe = StableDiffusionXLImg2ImgPipeline.from_pipe(
                self.base(base_model_ref), dtype=torch_dtype(self.config)
            )
            pipe.set_progress_bar_config(disable=True)
            self._img2img[base_model_ref] = pipe
        return self._img2img[base_model_ref]

    def video(self, video_ref: str) -> Any:
        """An image-to-video model (a diffusers StableVideoDiffusionPipeline folder), loaded
        once; it takes no prompt, so no LoRA applies to it."""
        if video_ref not in self._videos:
            path = self.manager.ensure(video_ref)
            if not (path / "model_index.json").is_file():
                raise ModelNotFound(
                    f"video model {video_ref!r} must be a diffusers StableVideoDiffusionPipeline "
                    "folder (model_index.json and safetensors)"
                )
            self._videos[video_ref] = load_video(path, self.config)
        return self._videos[video_ref]

    def style(
        self, base_model_ref: str, lora_ids: list[str], motion_ref: str | None = None
    ) -> LoadedStyle:
        """The base pipeline (or its motion pipeline for ``motion_ref``) with every LoRA of the
        set loaded (downloaded first if needed)."""
        pipe = self.base(base_model_ref)
        target = self.motion(base_model_ref, motion_ref) if motion_ref else pipe
        recent, motions = self._recent[base_model_ref], self._motions[base_model_ref]
        adapters = []
        for entry in lora_ids:
            ref, weight = parse_lora(entry)
            name = adapter_name(ref)
            if name not in recent:
                path = self.manager.ensure(ref)
                if path.suffix != ".safetensors":
                    raise ModelNotFound(f"LoRA {ref!r} must be a .safetensors file")
                pipe.load_lora_weights(str(path), adapter_name=name)
                for motion in motions.values():
                    load_unet_lora(motion, path, name)
                recent[name] = path
            recent.move_to_end(name)
            adapters.append((name, weight))
        in_use = {name for name, _ in adapters}
        for name in [n for n in recent if n not in in_use][: max(0, len(recent) - self.max_loras)]:
            pipe.delete_adapters([name])
            for motion in motions.values():
                motion.unet.delete_adapters(name)
            del recent[name]
        return LoadedStyle(target, tuple(adapters))

    def activate(self, style: LoadedStyle) -> Any:
        """Switch the style's adapters on (and every other off); the pipeline to call."""
        if style.adapters:
            style.pipe.enable_lora()
            names, weights = zip(*style.adapters, strict=True)
            style.pipe.set_adapters(list(names), adapter_weights=list(weights))
        elif style.pipe.get_list_adapters():
            style.pipe.disable_lora()
        return style.pipe


def to_pixels(images: np.ndarray) -> np.ndarray:
    """Float images in [0, 1] (N, H, W, 3) as uint8."""
    return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
