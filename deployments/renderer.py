"""Renderer: text-to-image with an SDXL pipeline, multiplexed by style id."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from ray import serve

from serve_app.models import DiffusionConfig, configure_torch, load_sdxl, resolve_model
from serve_app.schemas import Frames, RenderJob
from serve_app.settings import Settings


class RendererConfig(DiffusionConfig):
    width: int = Field(default=128, ge=64, le=2048, multiple_of=8)
    height: int = Field(default=128, ge=64, le=2048, multiple_of=8)


class RendererEngine:
    """Keeps base pipelines by model ref; one render at a time (pipelines are not thread-safe)."""

    def __init__(self, models_dir: Path, config: RendererConfig | None = None) -> None:
        self.models_dir = models_dir
        self.config = config or RendererConfig()
        self._pipelines: dict[str, Any] = {}
        self._lock = threading.Lock()

    def load(self, base_model_ref: str) -> Any:
        with self._lock:
            if base_model_ref not in self._pipelines:
                path = resolve_model(base_model_ref, self.models_dir)
                self._pipelines[base_model_ref] = load_sdxl(path, self.config)
            return self._pipelines[base_model_ref]

    def render(self, pipe: Any, job: RenderJob) -> Frames:
        import torch

        cfg = self.config
        with self._lock, torch.inference_mode():
            out = pipe(
                prompt=job.prompt,
                negative_prompt=job.negative_prompt or None,
                num_inference_steps=cfg.steps,
                guidance_scale=cfg.guidance_scale,
                width=cfg.width,
                height=cfg.height,
                output_type="np",
                generator=torch.Generator(pipe.device).manual_seed(job.seed),
            )
        pixels = (np.clip(out.images, 0.0, 1.0) * 255).round().astype(np.uint8)
        meta = {
            "seed": job.seed,
            "steps": cfg.steps,
            "guidance_scale": cfg.guidance_scale,
            "sampler": type(pipe.scheduler).__name__,
            "style_id": job.style_id,
            "base_model_ref": job.base_model_ref,
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt,
            "width": cfg.width,
            "height": cfg.height,
        }
        return Frames(pixels=pixels, meta=meta)


@serve.deployment(name="Renderer", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=2)
class Renderer:
    def __init__(self) -> None:
        settings = Settings()
        configure_torch(settings)
        self.engine = RendererEngine(settings.resolved_models_dir)
        self._style_bases: dict[str, str] = {}

    def reconfigure(self, config: dict) -> None:
        self.engine.config = RendererConfig.model_validate(config)

    @serve.multiplexed(max_num_models_per_replica=4)
    async def get_style(self, style_id: str) -> Any:
        return await asyncio.to_thread(self.engine.load, self._style_bases[style_id])

    async def render(self, job: RenderJob) -> Frames:
        """Routed by ``multiplexed_model_id=job.style_id`` to a replica holding the style."""
        self._style_bases[job.style_id] = job.base_model_ref
        pipe = await self.get_style(job.style_id)
        return await asyncio.to_thread(self.engine.render, pipe, job)
