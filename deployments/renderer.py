"""Renderer: text-to-image with SDXL, multiplexed by style id (base model + LoRA set + weights)."""

from __future__ import annotations

import asyncio
import io
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.characters.conditioning import IdentityConditioner
from serve_app.diffusion.calls import call_shape, steps_run
from serve_app.diffusion.lanes import RenderLanes
from serve_app.diffusion.pipelines import (
    DiffusionConfig,
    StylePipelines,
    configure_torch,
    to_pixels,
)
from serve_app.diffusion.sizes import render_size
from serve_app.diffusion.sources import ModelManager, model_manager
from serve_app.metrics import timed
from serve_app.schemas import Frames, RenderJob
from serve_app.settings import Settings
from serve_app.storage import open_object_store
from serve_app.storage.objects import ObjectStore

log = logging.getLogger("ray.serve")


class RendererConfig(DiffusionConfig):
    width: int = Field(default=128, ge=64, le=2048, multiple_of=8, description="Render width (px).")
    height: int = Field(
        default=128, ge=64, le=2048, multiple_of=8, description="Render height (px)."
    )
    max_side: int = Field(
        default=2048,
        ge=64,
        le=4096,
        description="Longest side (px) a job's aspect may render at; a job that would render "
        "larger (or with a side under 32 px) fails with a 422 (``diffusion/sizes.py``).",
    )
    ip_adapter: str | None = Field(
        default=None,
        description="IP-Adapter (a model ref: a folder with its safetensors weights and its "
        "image_encoder/) that conditions renders of a soul with a locked identity; None: off.",
    )
    max_styles: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Styles a replica keeps ready (multiplexing; read when a replica starts).",
    )
    max_loras: int = Field(
        default=8, ge=1, le=128, description="LoRA adapters kept loaded per base model (LRU)."
    )
    max_batch_size: int = Field(
        default=4,
        ge=1,
        le=32,
        description="Renders of one style a replica runs as one pipeline call, at most "
        "(@serve.batch); also the replica's max_ongoing_requests unless a limit sets it.",
    )
    batch_wait_s: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="How long a render waits for others of its style to join its batch. Renders "
        "that arrive while a batch runs join the next one without waiting.",
    )


StepReport = Callable[[int, int], None]  # (denoising step done, steps in all)


class Stop(Protocol):
    """Asked between denoising steps: stop the render? (a ``threading.Event`` is one)"""

    def is_set(self) -> bool: ...


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
        self.conditioner = IdentityConditioner(manager, objects)
        self.configure(config or RendererConfig())

    def configure(self, config: RendererConfig) -> None:
        """Applies to pipelines loaded from now on (device, dtype) and to every call (the rest)."""
        self.config = self.pipelines.config = config
        self.pipelines.max_loras = config.max_loras
        self.conditioner.adapter = config.ip_adapter

    def prepare(self, job: RenderJob) -> None:
        """Download and load what the job's style needs (the slow part of a style switch)."""
        with self.pipelines.lock:
            self.pipelines.style(job.base_model_ref, job.lora_ids)

    def render(
        self, job: RenderJob, on_step: StepReport | None = None, stop: Stop | None = None
    ) -> Frames:
        """One job: ``render_batch`` of one, raising its failure."""
        (outcome,) = self.render_batch([job], on_step, stop)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def render_batch(
        self, jobs: list[RenderJob], on_step: StepReport | None = None, stop: Stop | None = None
    ) -> list[Frames | Exception]:
        """Each job's picture, or what failed it, in order; a failure is its job's alone.

        Jobs of one call shape (style, reference strength, with or without a negative prompt)
        run as one pipeline call, each with its own prompt and seed, so a job's picture is the
        one it gets rendered alone. A job whose reference image can't be read fails alone; when
        a batched call fails (out of memory, say), its jobs are rendered again one by one.
        """
        outcomes: dict[int, Frames | Exception] = {}
        shapes: dict[tuple[Any, ...], list[tuple[int, dict[str, Any]]]] = {}
        for i, job in enumerate(jobs):
            try:
                inputs = self._inputs(job)  # reads the reference image, if any, outside the lock
            except Exception as exc:
                outcomes[i] = exc
            else:
                shapes.setdefault(call_shape(job), []).append((i, inputs))
        for members in shapes.values():
            group = [(jobs[i], inputs) for i, inputs in members]
            results = self._render_group(group, on_step, stop)
            outcomes.update(zip([i for i, _ in members], results, strict=True))
        return [outcomes[i] for i in range(len(jobs))]

    def _render_group(
        self,
        group: list[tuple[RenderJob, dict[str, Any]]],
        on_step: StepReport | None,
        stop: Stop | None,
    ) -> Sequence[Frames | Exception]:
        try:
            return self._call(group, on_step, stop)
        except RenderInterrupted as exc:
            return [exc] * len(group)
        except Exception as exc:
            if len(group) == 1:
                return [exc]
            log.warning(
                "a batch of %d renders failed (%r); rendering them one by one", len(group), exc
            )
            return [self._render_group([member], on_step, stop)[0] for member in group]

    def _call(
        self,
        group: list[tuple[RenderJob, dict[str, Any]]],
        on_step: StepReport | None,
        stop: Stop | None,
    ) -> list[Frames]:
        """One pipeline call for jobs of one call shape."""
        import torch

        jobs = [job for job, _ in group]
        first, inputs = group[0]
        if "image" in inputs:
            inputs = {**inputs, "image": [member_inputs["image"] for _, member_inputs in group]}
        steps = steps_run(inputs)

        def step_end(pipe: Any, index: int, _timestep: Any, tensors: dict) -> dict:
            if on_step is not None:
                on_step(index + 1, steps)
            if stop is not None and stop.is_set():
                pipe._interrupt = True  # the loop skips every step after this one
            return tensors

        with self.pipelines.lock, torch.inference_mode():
            pipe = self.pipelines.activate(
                self.pipelines.style(first.base_model_ref, first.lora_ids)
            )
            if first.reference_key is not None:
                pipe = self.pipelines.img2img(first.base_model_ref)
            guided = self.config.guidance_scale > 1
            if first.cast:
                casts = [job.cast for job in jobs]
                size = self.size(first)  # the masks are drawn at the job's render size
                conditioning = self.conditioner.masked_inputs(pipe, casts, guided, size)
            else:
                identities = [job.identity for job in jobs]
                conditioning = self.conditioner.inputs(pipe, identities, guided)
            inputs = {**inputs, **conditioning}
            started = time.perf_counter()
            with timed("soul_render_ms", source="reference" if first.reference_key else "text"):
                out = pipe(
                    prompt=[job.prompt for job in jobs],
                    negative_prompt=[job.negative_prompt for job in jobs]
                    if first.negative_prompt
                    else None,
                    guidance_scale=self.config.guidance_scale,
                    output_type="np",
                    generator=[torch.Generator(pipe.device).manual_seed(job.seed) for job in jobs],
                    callback_on_step_end=step_end,
                    **inputs,
                )
        if stop is not None and stop.is_set():
            raise RenderInterrupted(f"render of seeds {[job.seed for job in jobs]} stopped")
        each_s = round((time.perf_counter() - started) / len(jobs), 4)  # the call's share
        sampler = type(pipe.scheduler).__name__
        pixels = to_pixels(out.images)
        return [
            Frames(pixels=pixels[i : i + 1], meta={**self._meta(job, sampler), "render_s": each_s})
            for i, job in enumerate(jobs)
        ]

    def _meta(self, job: RenderJob, sampler: str) -> dict[str, Any]:
        """The render's facts: ``schemas.RENDER_FACTS``, in that order."""
        cfg = self.config
        width, height = self.size(job)
        return {
            "seed": job.seed,
            "steps": cfg.steps,
            "guidance_scale": cfg.guidance_scale,
            "sampler": sampler,
            "style_id": job.style_id,
            "base_model_ref": job.base_model_ref,
            "lora_ids": job.lora_ids,
            "prompt": job.prompt,
            "negative_prompt": job.negative_prompt,
            "width": width,
            "height": height,
            "reference_key": job.reference_key,
            "reference_strength": job.reference_strength,
        }

    def size(self, job: RenderJob) -> tuple[int, int]:
        """The job's render size: its aspect at the configured area, or the configured size."""
        cfg = self.config
        return render_size(job.aspect, (cfg.width, cfg.height), cfg.max_side)

    def _inputs(self, job: RenderJob) -> dict[str, Any]:
        """Text-to-image at the job's render size, or img2img from its reference image (scaled
        to that size); a size the Renderer refuses fails the job alone."""
        cfg = self.config
        width, height = self.size(job)
        if job.reference_key is None or job.reference_strength is None:
            return {"width": width, "height": height, "num_inference_steps": cfg.steps}
        return {
            "image": self._reference_image(job.reference_key, (width, height)),
            "strength": job.reference_strength,
            # img2img runs int(steps * strength) steps: scaled up, it runs cfg.steps.
            "num_inference_steps": math.ceil(cfg.steps / job.reference_strength),
        }

    def _reference_image(self, key: str, size: tuple[int, int]) -> Any:
        """The reference image, centre-cropped and scaled to the render size."""
        from PIL import Image, ImageOps

        if self.objects is None:
            raise ValueError("this renderer has no object store to read reference images from")
        with Image.open(io.BytesIO(self.objects.get(key))) as image:
            return ImageOps.fit(image.convert("RGB"), size, Image.Resampling.LANCZOS)


class StepReporter:
    """Reports a render's steps to the job items waiting on it, at most every ``every_s``
    (and always the last step, and the step it stopped at); called from the render's thread."""

    def __init__(
        self, catalog: DeploymentHandle, refs: list[str], stop: Stop, every_s: float
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


@dataclass
class WaitingRender:
    """A render call waiting in (or running as part of) a batch; ``left`` once its caller
    cancelled it."""

    job: RenderJob
    left: threading.Event = field(default_factory=threading.Event)


@dataclass
class EveryCallerLeft:
    """A batch stops once every call in it was cancelled: the others still want their images."""

    calls: list[WaitingRender]

    def is_set(self) -> bool:
        return all(call.left.is_set() for call in self.calls)


@serve.deployment(
    name="Renderer",
    ray_actor_options={"num_cpus": 0.5},
    max_ongoing_requests=RendererConfig().max_batch_size,  # as many at once as it batches
)
class Renderer:
    def __init__(
        self, catalog: DeploymentHandle, max_styles: int = RendererConfig().max_styles
    ) -> None:
        self.catalog = catalog
        settings = Settings()
        configure_torch(settings.models)
        self.engine = RendererEngine(model_manager(settings), objects=open_object_store(settings))
        self._jobs: dict[str, RenderJob] = {}
        self.lanes = RenderLanes()

        async def load(style_id: str) -> str:
            await asyncio.to_thread(self.engine.prepare, self._jobs[style_id])
            return style_id

        # Wired here (Serve supports it) so the number of styles kept comes from the app's
        # config; Serve routes a style id to a replica that reports it loaded. A plain function:
        # Serve keeps its cache on the function object, which a bound method can't hold.
        self.get_style = serve.multiplexed(max_num_models_per_replica=max_styles)(load)

    def reconfigure(self, config: dict) -> None:
        self.engine.configure(RendererConfig.model_validate(config))
        batching: Any = self._render_batch  # serve.batch gave the method its setters
        batching.set_max_batch_size(self.engine.config.max_batch_size)
        batching.set_batch_wait_timeout_s(self.engine.config.batch_wait_s)

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """The job backlog, for the backlog autoscaling policy (``serve_app.autoscale``)."""
        backlog: dict[str, float] = await self.catalog.job_backlog.remote()
        return backlog

    async def render(self, job: RenderJob) -> Frames:
        """Routed by ``multiplexed_model_id=job.style_id`` to a replica holding the style, and
        batched with the renders of that style waiting there (Serve splits a batch by model id).

        Cancelled (Serve cancels a call whose caller cancelled it), the render leaves its batch;
        a batch every caller left stops at its next denoising step."""
        self._jobs[job.style_id] = job
        self.lanes.arrived(job)  # a batch of refills running here gives way
        call = WaitingRender(job)
        try:
            await self.get_style(job.style_id)
            outcome = await self._render_batch(call)
        except asyncio.CancelledError:
            call.left.set()
            raise
        finally:
            self.lanes.left(job)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    @serve.batch(
        max_batch_size=RendererConfig().max_batch_size,
        batch_wait_timeout_s=RendererConfig().batch_wait_s,
    )
    async def _render_batch(self, calls: list[WaitingRender]) -> list[Frames | Exception]:
        stop = EveryCallerLeft(calls)
        refs = [ref for call in calls for ref in call.job.progress_refs]
        report = StepReporter(self.catalog, refs, stop, 0.25) if refs else None
        jobs = [call.job for call in calls]
        return await asyncio.to_thread(self.lanes.run, self.engine.render_batch, jobs, report, stop)
