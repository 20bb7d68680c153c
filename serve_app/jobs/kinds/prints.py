"""The ``print`` job (``POST /variants/{variant_id}/print``): a print-ready file of a variant's
still, stored beside it.

    check     the size within ``config/prints.yaml``'s bounds, the chain known, the variant
              there (404) and not deleted (410): refused before anything is written
    reuse     a print already stored under the request's key is the answer (``reused``)
    upscale   the cover, by the Upscaler's smallest factor that reaches the size (none when
              the cover is large enough already)
    finish    framed to the exact size, the chain, the background cut out if asked, encoded
              at the configured DPI with an sRGB profile, validated (``prints/output.py``)
    store     one object put: a print is there whole or not at all; a variant's prints go
              with its other objects (deleted or swept together)

Each stage is saved as the job's progress; a cancel stops the job between stages.
"""

from __future__ import annotations

import asyncio
import io
from functools import cache
from typing import Literal

import numpy as np
from PIL import Image
from pydantic import Field

from serve_app.api.protocol import PrintResult
from serve_app.errors import InvalidRequest
from serve_app.jobs.book import JobDoc, Progress
from serve_app.jobs.kinds.base import Attempt, Ended, JobKind, JobTools
from serve_app.jobs.spec import Item, JobBase
from serve_app.media.prints import print_view
from serve_app.prints.chain import hex_palette
from serve_app.prints.matte import OnnxMatte, grabcut_alpha
from serve_app.prints.output import Matte, finish
from serve_app.prints.spec import PrintOptions, load_prints
from serve_app.schemas import Variant
from serve_app.storage.objects import ObjectStore

ULID = r"^[0-9A-HJKMNP-TV-Z]{26}$"
STAGES = ("load", "upscale", "finish", "store")


class PrintJob(PrintOptions, JobBase):
    """A print version of a variant's still."""

    kind: Literal["print"] = "print"
    variant_id: str = Field(pattern=ULID, description="The variant printed.")

    @property
    def options(self) -> PrintOptions:
        return PrintOptions.model_validate(self.model_dump(include=set(PrintOptions.model_fields)))


@cache
def matte_for(matte_model: str | None) -> Matte:
    """The ONNX matte when one is staged, else GrabCut (loaded once per process)."""
    if matte_model is None:
        return grabcut_alpha
    from serve_app.diffusion.sources import model_manager
    from serve_app.settings import Settings

    return OnnxMatte(model_manager(Settings()).ensure(matte_model)).alpha


class PrintKind(JobKind[PrintJob]):
    name = "print"
    spec = PrintJob
    submitted = False

    def items(self, spec: PrintJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(0)]

    async def check(self, spec: PrintJob, tools: JobTools) -> None:
        config = load_prints()
        if not all(config.min_side <= side <= config.max_side for side in spec.options.pixels):
            raise InvalidRequest(
                f"size: {spec.size} is beyond the bounds ({config.min_side} to "
                f"{config.max_side} px a side)"
            )
        if spec.chain is not None and spec.chain not in config.chains:
            known = ", ".join(sorted(config.chains))
            raise InvalidRequest(f"chain: unknown chain {spec.chain!r}; known: {known}")
        await tools.catalog.find_variant.remote(spec.variant_id)

    async def run(self, spec: PrintJob, attempt: Attempt) -> Ended:
        tools, outcome = attempt.tools, attempt.doc.outcome
        objects: ObjectStore = tools.deliverer.objects
        variant: Variant = await tools.catalog.find_variant.remote(spec.variant_id)
        key = spec.options.key(variant.stem)
        reused = await asyncio.to_thread(objects.exists, key)
        if not reused:
            data = await self._make(spec, variant, attempt)
            await attempt.save(outcome, Progress(done=0, total=1, stage="store"))
            await asyncio.to_thread(objects.put, key, data)
        outcome.items[0] = {"variant_id": variant.variant_id, "key": key, "reused": reused}
        return Ended("succeeded", outcome)

    async def _make(self, spec: PrintJob, variant: Variant, attempt: Attempt) -> bytes:
        tools, outcome, options = attempt.tools, attempt.doc.outcome, spec.options
        config = load_prints()
        await attempt.save(outcome, Progress(done=0, total=1, stage="load"))
        cover = variant.meta.get("cover_key", variant.storage_key)
        data = await asyncio.to_thread(tools.deliverer.objects.get, cover)
        still = Image.open(io.BytesIO(data)).convert("RGB")  # a GIF's first frame, if no cover
        width, height = options.pixels
        scale = (max if options.fit == "cover" else min)(width / still.width, height / still.height)
        if scale > 1:
            await attempt.save(outcome, Progress(done=0, total=1, stage="upscale"))
            upscaled = await tools.deliverer.handles.upscaler.upscale.remote(
                (np.asarray(still), scale)
            )
            still = Image.fromarray(upscaled.pixels)
        await attempt.save(outcome, Progress(done=0, total=1, stage="finish"))
        style = await tools.catalog.get_style.remote(spec.soul_id)
        palette = hex_palette(style.palette if style is not None else {})
        steps = config.chain_of(spec.soul_id, spec.chain)
        matte = matte_for(config.matte_model) if options.background == "remove" else None
        return await asyncio.to_thread(finish, still, options, config, steps, palette, matte)

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> PrintResult | None:
        made = doc.outcome.items[0] if doc.outcome.items else None
        if made is None:
            return None
        return PrintResult(
            variant_id=made["variant_id"],
            reused=made["reused"],
            prints=[print_view(objects, ttl_s, made["key"])],
        )
