"""Animator, "subtle" mode (seed §7): the render plus low-strength img2img variations of it."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from pydantic import Field, model_validator
from ray import serve

from serve_app.model_manager import ModelManager
from serve_app.models import (
    DiffusionConfig,
    LoadedStyle,
    StylePipelines,
    configure_torch,
    model_manager,
)
from serve_app.schemas import AnimateJob, Frames
from serve_app.settings import Settings


class AnimatorConfig(DiffusionConfig):
    frames: int = Field(default=8, ge=6, le=12, description="Frames per GIF, the render included.")
    strength: float = Field(default=0.3, gt=0.0, le=1.0, description="img2img strength.")
    steps: int = Field(default=10, ge=1, le=150, description="Steps before strength scaling.")
    batch_size: int = Field(default=4, ge=1, le=12, description="Variations per pipeline call.")

    @model_validator(mode="after")
    def leaves_a_denoising_step(self) -> AnimatorConfig:
        if int(self.steps * self.strength) < 1:
            raise ValueError(
                f"steps * strength must be at least 1 (img2img runs int(steps * strength) "
                f"steps); got {self.steps} * {self.strength}"
            )
        return self


class AnimatorEngine:
    """Variations run with the soul's LoRA set switched on, like its render."""

    def __init__(self, manager: ModelManager, config: AnimatorConfig | None = None) -> None:
        self.config = config or AnimatorConfig()
        self.pipelines = StylePipelines(manager, self.config)
        self._img2img: dict[str, Any] = {}

    def img2img(self, base_model_ref: str, style: LoadedStyle) -> Any:
        """The style's pipeline as img2img: ``from_pipe`` shares its modules, adapters included."""
        from diffusers import StableDiffusionXLImg2ImgPipeline

        self.pipelines.activate(style)
        if base_model_ref not in self._img2img:
            pipe = StableDiffusionXLImg2ImgPipeline.from_pipe(style.pipe)
            pipe.set_progress_bar_config(disable=True)
            self._img2img[base_model_ref] = pipe
        return self._img2img[base_model_ref]

    def animate(self, image: Frames, job: AnimateJob) -> Frames:
        import torch
        from PIL import Image

        cfg = self.config
        init = Image.fromarray(image.pixels[0])
        seeds = [(job.seed + i) % 2**63 for i in range(1, cfg.frames)]
        frames = [image.pixels[0]]
        with self.pipelines.lock, torch.inference_mode():
            style = self.pipelines.style(job.base_model_ref, job.lora_ids)
            pipe = self.img2img(job.base_model_ref, style)
            for start in range(0, len(seeds), cfg.batch_size):
                chunk = seeds[start : start + cfg.batch_size]
                out = pipe(
                    prompt=[job.prompt] * len(chunk),
                    negative_prompt=[job.negative_prompt] * len(chunk)
                    if job.negative_prompt
                    else None,
                    image=[init] * len(chunk),
                    strength=cfg.strength,
                    num_inference_steps=cfg.steps,
                    guidance_scale=cfg.guidance_scale,
                    generator=[torch.Generator(pipe.device).manual_seed(s) for s in chunk],
                    output_type="np",
                )
                frames.extend((np.clip(out.images, 0.0, 1.0) * 255).round().astype(np.uint8))
        meta = {
            **image.meta,
            "animation": job.mode,
            "frames": len(frames),
            "strength": cfg.strength,
            "animate_steps": cfg.steps,
        }
        return Frames(pixels=np.stack(frames), meta=meta)


@serve.deployment(name="Animator", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=2)
class Animator:
    def __init__(self) -> None:
        settings = Settings()
        configure_torch(settings)
        self.engine = AnimatorEngine(model_manager(settings))

    def reconfigure(self, config: dict) -> None:
        self.engine.config = self.engine.pipelines.config = AnimatorConfig.model_validate(config)

    async def animate(self, image: Frames, job: AnimateJob) -> Frames:
        return await asyncio.to_thread(self.engine.animate, image, job)
