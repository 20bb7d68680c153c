"""Animator (seed §7): "subtle" mode, the render plus low-strength img2img variations of it;
"animated" mode, AnimateDiff with the soul's motion module; or "video" mode, Stable Video
Diffusion (image-to-video) from the render. The soul's style picks the mode.

A job with an identity (``AnimateJob.identity``: a soul's locked version) is conditioned on the
version's IP-Adapter image embedding at its strength, as the Renderer's renders are
(``serve_app.characters.conditioning``: the same adapter loading, the same embedding, computed
once per version and cached in the object store): the "subtle" variations and the "animated"
frames. "video" is conditioned by the render itself (SVD starts from it)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
from pydantic import Field, model_validator
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.characters.conditioning import IdentityConditioner
from serve_app.diffusion.pipelines import (
    DiffusionConfig,
    StylePipelines,
    configure_torch,
    to_pixels,
)
from serve_app.diffusion.sources import ModelManager, ModelNotFound, model_manager
from serve_app.metrics import timed
from serve_app.schemas import AnimateJob, Frames
from serve_app.settings import Settings
from serve_app.storage import open_object_store
from serve_app.storage.objects import ObjectStore


class AnimatorConfig(DiffusionConfig):
    frames: int = Field(default=8, ge=6, le=12, description="Frames per GIF, the render included.")
    strength: float = Field(default=0.3, gt=0.0, le=1.0, description="img2img strength.")
    steps: int = Field(default=10, ge=1, le=150, description="Steps before strength scaling.")
    batch_size: int = Field(default=4, ge=1, le=12, description="Variations per pipeline call.")
    ip_adapter: str | None = Field(
        default=None,
        description="IP-Adapter (a model ref, as renderer.ip_adapter) that conditions the "
        "frames of a soul with a locked identity; None: off (the frames follow the "
        "conditioned render only).",
    )
    video_model: str = Field(
        default="tiny-svd",
        description='Image-to-video model of mode "video": a diffusers '
        "StableVideoDiffusionPipeline folder, by tag under the models folder or absolute path.",
    )

    @model_validator(mode="after")
    def leaves_a_denoising_step(self) -> AnimatorConfig:
        if int(self.steps * self.strength) < 1:
            raise ValueError(
                f"steps * strength must be at least 1 (img2img runs int(steps * strength) "
                f"steps); got {self.steps} * {self.strength}"
            )
        return self


class AnimatorEngine:
    """Frames run with the soul's LoRA set switched on, like its render."""

    def __init__(
        self,
        manager: ModelManager,
        config: AnimatorConfig | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        self.pipelines = StylePipelines(manager, AnimatorConfig())
        self.conditioner = IdentityConditioner(manager, objects)
        self.configure(config or AnimatorConfig())

    def configure(self, config: AnimatorConfig) -> None:
        """Applies to pipelines loaded from now on (device, dtype) and to every call (the rest)."""
        self.config = self.pipelines.config = config
        self.conditioner.adapter = config.ip_adapter

    def animate(self, image: Frames, job: AnimateJob) -> Frames:
        import torch

        with self.pipelines.lock, torch.inference_mode(), timed("soul_animate_ms", mode=job.mode):
            started = time.perf_counter()
            if job.mode == "animated":
                frames, facts = self._animated(image, job)
            elif job.mode == "video":
                frames, facts = self._video(image, job)
            else:
                frames, facts = self._subtle(image, job)
            animate_s = round(time.perf_counter() - started, 4)
        meta = {
            **image.meta,
            "animation": job.mode,
            "frames": len(frames),
            "animate_steps": self.config.steps,
            **facts,
            "animate_s": animate_s,
        }
        return Frames(pixels=frames, meta=meta)

    def _subtle(self, image: Frames, job: AnimateJob) -> tuple[np.ndarray, dict[str, Any]]:
        """Frame 0 is the render; the others are low-strength img2img variations of it."""
        import torch
        from PIL import Image

        cfg = self.config
        init = Image.fromarray(image.pixels[0])
        seeds = [(job.seed + i) % 2**63 for i in range(1, job.frames or cfg.frames)]
        frames = [image.pixels[:1]]
        self.pipelines.activate(self.pipelines.style(job.base_model_ref, job.lora_ids))
        pipe = self.pipelines.img2img(job.base_model_ref)
        for start in range(0, len(seeds), cfg.batch_size):
            chunk = seeds[start : start + cfg.batch_size]
            conditioning = self.conditioner.inputs(
                pipe, [job.identity] * len(chunk), cfg.guidance_scale > 1
            )
            out = pipe(
                prompt=[job.prompt] * len(chunk),
                negative_prompt=[job.negative_prompt] * len(chunk) if job.negative_prompt else None,
                image=[init] * len(chunk),
                strength=cfg.strength,
                num_inference_steps=cfg.steps,
                guidance_scale=cfg.guidance_scale,
                generator=[torch.Generator(pipe.device).manual_seed(s) for s in chunk],
                output_type="np",
                **conditioning,
            )
            frames.append(to_pixels(out.images))
        return np.concatenate(frames), {"strength": cfg.strength}

    def _animated(self, image: Frames, job: AnimateJob) -> tuple[np.ndarray, dict[str, Any]]:
        """AnimateDiff from the render's prompt and seed, at its size (the render itself is not
        a frame: text-to-video starts from noise)."""
        import torch

        if not job.motion_module:
            raise ModelNotFound('animation "animated" needs a motion_module')
        cfg = self.config
        _, height, width, _ = image.pixels.shape
        style = self.pipelines.style(job.base_model_ref, job.lora_ids, job.motion_module)
        pipe = self.pipelines.activate(style)
        conditioning = self.conditioner.inputs(pipe, [job.identity], cfg.guidance_scale > 1)
        out = pipe(
            prompt=job.prompt,
            negative_prompt=job.negative_prompt or None,
            num_frames=job.frames or cfg.frames,
            height=height,
            width=width,
            num_inference_steps=cfg.steps,
            guidance_scale=cfg.guidance_scale,
            generator=torch.Generator(pipe.device).manual_seed(job.seed),
            output_type="np",
            **conditioning,
        )
        return to_pixels(out.frames[0]), {"motion_module": job.motion_module}

    def _video(self, image: Frames, job: AnimateJob) -> tuple[np.ndarray, dict[str, Any]]:
        """Stable Video Diffusion from the render, at its size: the frames move out of it (the
        first one is close to it, not it)."""
        import torch
        from PIL import Image

        cfg = self.config
        _, height, width, _ = image.pixels.shape
        frames = job.frames or cfg.frames
        pipe = self.pipelines.video(cfg.video_model)
        out = pipe(
            image=Image.fromarray(image.pixels[0]),
            height=height,
            width=width,
            num_frames=frames,
            num_inference_steps=cfg.steps,
            max_guidance_scale=max(1.0, cfg.guidance_scale),
            decode_chunk_size=frames,
            generator=torch.Generator(pipe.device).manual_seed(job.seed),
            output_type="np",
        )
        return to_pixels(out.frames[0]), {"video_model": cfg.video_model}


@serve.deployment(name="Animator", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=2)
class Animator:
    def __init__(self, catalog: DeploymentHandle) -> None:
        self.catalog = catalog  # only for the job backlog its autoscaling policy reads
        settings = Settings()
        configure_torch(settings.models)
        self.engine = AnimatorEngine(model_manager(settings), objects=open_object_store(settings))

    def reconfigure(self, config: dict) -> None:
        self.engine.configure(AnimatorConfig.model_validate(config))

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """The job backlog, for the backlog autoscaling policy (``serve_app.autoscale``)."""
        backlog: dict[str, float] = await self.catalog.job_backlog.remote()
        return backlog

    async def animate(self, image: Frames, job: AnimateJob) -> Frames:
        return await asyncio.to_thread(self.engine.animate, image, job)
