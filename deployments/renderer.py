"""Renderer: text-to-image with SDXL, multiplexed by style id (base model + LoRA set + weights)."""

from __future__ import annotations

import asyncio
import io
import math
from typing import Any

from pydantic import Field
from ray import serve

from serve_app.diffusion.pipelines import (
    DiffusionConfig,
    StylePipelines,
    configure_torch,
    to_pixels,
)
from serve_app.diffusion.sources import ModelManager, model_manager
from serve_app.metrics import timed
from serve_app.schemas import Frames, RenderJob
from serve_app.settings import Settings
from serve_app.storage.objects import ObjectStore, open_object_store


class RendererConfig(DiffusionConfig):
    width: int = Field(default=128, ge=64, le=2048, multiple_of=8)
    height: int = Field(default=128, ge=64, le=2048, multiple_of=8)
    max_styles: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Styles a replica keeps ready (multiplexing; read when a replica starts).",
    )
    max_loras: int = Field(
        default=8, ge=1, le=128, description="LoRA adapters kept loaded per base model (LRU)."
    )


class RendererEngine:
    """One render at a time per replica: pipelines are not thread-safe.

    A job with a reference image renders img2img from it (read from ``objects``).
    """

    def __init__(
        self,
        manager: ModelManager,
        config: RendererConfig | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        self.pipelines = StylePipelines(manager, DiffusionConfig())
        self.objects = objects
        self.configure(config or RendererConfig())

    def configure(self, config: RendererConfig) -> None:
        """Applies to pipelines loaded from now on (device, dtype) and to every call (the rest)."""
        self.config = self.pipelines.config = config
        self.pipelines.max_loras = config.max_loras

    def prepare(self, job: RenderJob) -> None:
        """Download and load what the job's style needs (the slow part of a style switch)."""
        with self.pipelines.lock:
            self.pipelines.style(job.base_model_ref, job.lora_ids)

    def render(self, job: RenderJob) -> Frames:
        import torch

        cfg = self.config
        inputs = self._inputs(job)  # reads the reference image, if any, outside the lock
        with self.pipelines.lock, torch.inference_mode():
            pipe = self.pipelines.activate(self.pipelines.style(job.base_model_ref, job.lora_ids))
            if job.reference_key is not None:
                pipe = self.pipelines.img2img(job.base_model_ref)
            with timed("soul_render_ms", source="reference" if job.reference_key else "text"):
                out = pipe(
                    prompt=job.prompt,
                    negative_prompt=job.negative_prompt or None,
                    guidance_scale=cfg.guidance_scale,
                    output_type="np",
                    generator=torch.Generator(pipe.device).manual_seed(job.seed),
                    **inputs,
                )
        meta = {
            "seed": job.seed,
            "steps": cfg.steps,
            "guidance_scale": cfg.guidance_scale,
            "sampler": type(pipe.scheduler).__name__,
            "style_id": job.style_id,
            "base_model_ref": job.base_model_ref,
            "lora_ids": job.lora_ids,
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt,
            "width": cfg.width,
            "height": cfg.height,
            "reference_key": job.reference_key,
            "reference_strength": job.reference_strength,
        }
        return Frames(pixels=to_pixels(out.images), meta=meta)

    def _inputs(self, job: RenderJob) -> dict[str, Any]:
        """Text-to-image at the render size, or img2img from the job's reference image."""
        cfg = self.config
        if job.reference_key is None or job.reference_strength is None:
            return {"width": cfg.width, "height": cfg.height, "num_inference_steps": cfg.steps}
        return {
            "image": self._reference_image(job.reference_key),
            "strength": job.reference_strength,
            # img2img runs int(steps * strength) steps: scaled up, it runs cfg.steps.
            "num_inference_steps": math.ceil(cfg.steps / job.reference_strength),
        }

    def _reference_image(self, key: str) -> Any:
        """The reference image, centre-cropped and scaled to the render size."""
        from PIL import Image, ImageOps

        if self.objects is None:
            raise ValueError("this renderer has no object store to read reference images from")
        with Image.open(io.BytesIO(self.objects.get(key))) as image:
            size = (self.config.width, self.config.height)
            return ImageOps.fit(image.convert("RGB"), size, Image.Resampling.LANCZOS)


@serve.deployment(name="Renderer", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=2)
class Renderer:
    def __init__(self, max_styles: int = RendererConfig().max_styles) -> None:
        settings = Settings()
        configure_torch(settings)
        self.engine = RendererEngine(model_manager(settings), objects=open_object_store(settings))
        self._jobs: dict[str, RenderJob] = {}

        async def load(style_id: str) -> str:
            await asyncio.to_thread(self.engine.prepare, self._jobs[style_id])
            return style_id

        # Wired here (Serve supports it) so the number of styles kept comes from the app's
        # config; Serve routes a style id to a replica that reports it loaded. A plain function:
        # Serve keeps its cache on the function object, which a bound method can't hold.
        self.get_style = serve.multiplexed(max_num_models_per_replica=max_styles)(load)

    def reconfigure(self, config: dict) -> None:
        self.engine.configure(RendererConfig.model_validate(config))

    async def render(self, job: RenderJob) -> Frames:
        """Routed by ``multiplexed_model_id=job.style_id`` to a replica holding the style."""
        self._jobs[job.style_id] = job
        await self.get_style(job.style_id)
        return await asyncio.to_thread(self.engine.render, job)
