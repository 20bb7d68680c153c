"""Renderer: text-to-image with SDXL, multiplexed by style id (base model + LoRA set + weights)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from pydantic import Field
from ray import serve
from ray.serve.handle import DeploymentHandle

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


StepReport = Callable[[int, int], None]  # (denoising step done, steps in all)


class RenderInterrupted(Exception):
    """The render was stopped between two denoising steps (its caller cancelled it)."""


class RendererEngine:
    """One render at a time per replica: pipelines are not thread-safe.

    A job with a reference image renders img2img from it (read from ``objects``). ``render``
    reports each denoising step to ``on_step`` and stops after the step during which ``stop``
    was set (diffusers' ``callback_on_step_end`` sets the pipeline's interrupt flag).
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

    def render(
        self, job: RenderJob, on_step: StepReport | None = None, stop: threading.Event | None = None
    ) -> Frames:
        import torch

        cfg = self.config
        inputs = self._inputs(job)  # reads the reference image, if any, outside the lock
        steps = _steps_run(inputs)

        def step_end(pipe: Any, index: int, _timestep: Any, tensors: dict) -> dict:
            if on_step is not None:
                on_step(index + 1, steps)
            if stop is not None and stop.is_set():
                pipe._interrupt = True  # the loop skips every step after this one
            return tensors

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
                    callback_on_step_end=step_end,
                    **inputs,
                )
        if stop is not None and stop.is_set():
            raise RenderInterrupted(f"render of seed {job.seed} stopped")
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


def _steps_run(inputs: dict[str, Any]) -> int:
    """Denoising steps a call runs: img2img runs ``int(steps * strength)`` of them."""
    steps = int(inputs["num_inference_steps"])
    return max(1, int(steps * inputs["strength"])) if "strength" in inputs else steps


class StepReporter:
    """Reports a render's steps to the job items waiting on it, at most every ``every_s``
    (and always the last step, and the step it stopped at); called from the render's thread."""

    def __init__(
        self, catalog: DeploymentHandle, refs: list[str], stop: threading.Event, every_s: float
    ) -> None:
        self.catalog, self.refs, self.stop, self.every_s = catalog, refs, stop, every_s
        self.loop = asyncio.get_running_loop()
        self.last = 0.0

    def __call__(self, step: int, steps: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and step < steps and not self.stop.is_set():
            return
        self.last = now
        self.loop.call_soon_threadsafe(self._send, step, steps)

    def _send(self, step: int, steps: int) -> None:
        self.catalog.job_progress.remote(self.refs, "render", step, steps)


@serve.deployment(name="Renderer", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=2)
class Renderer:
    def __init__(
        self, catalog: DeploymentHandle, max_styles: int = RendererConfig().max_styles
    ) -> None:
        self.catalog = catalog
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

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """The job backlog, for the backlog autoscaling policy (``serve_app.autoscale``)."""
        backlog: dict[str, float] = await self.catalog.job_backlog.remote()
        return backlog

    async def render(self, job: RenderJob) -> Frames:
        """Routed by ``multiplexed_model_id=job.style_id`` to a replica holding the style.

        Cancelled (Serve cancels a call whose caller cancelled it), the render stops at its
        next denoising step; the replica is free again once it has."""
        self._jobs[job.style_id] = job
        await self.get_style(job.style_id)
        stop = threading.Event()
        report = (
            StepReporter(self.catalog, job.progress_refs, stop, 0.25) if job.progress_refs else None
        )
        rendering = asyncio.ensure_future(asyncio.to_thread(self.engine.render, job, report, stop))
        try:
            return await asyncio.shield(rendering)
        except asyncio.CancelledError:
            stop.set()
            with contextlib.suppress(RenderInterrupted):
                await rendering
            raise
