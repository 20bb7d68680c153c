"""The ``storyboard_export`` job (``POST /v1/projects/{project_id}/exports/pdf`` and
``…/exports/image-sequence``): a project's approved frames, in timeline order, as one file.

    frames: each frame's approved version (frames without one are left out), scenes in
            timeline order, frames by index; none approved: the job fails (409)
    pdf:    the storyboard sheet (``stories/sheet.py``): a cover with the project and its cast,
            then ``per_page`` frames a page with their scene heading, camera, mood, lighting,
            action, dialogue and notes
    zip:    the image sequence (``stories/exports.py``): the stored PNGs numbered in order and a
            manifest (frame ids, versions, seeds, pipeline versions, graph hashes, SHA-256s)
    print   ``print_ready``: each frame first goes through the print path (as a portrait's
            print, ``jobs/kinds/portrait.py``): upscaled by the Upscaler to ``PRINT_LONG_SIDE``
            px on its long side at its own aspect, the project's chain, PNG at the configured
            DPI with an sRGB profile, validated; the zip holds those files (its manifest says
            ``print_ready``), the sheet is laid out from them
    where:  ``proj/{project_id}/exports/{timestamp}/storyboard.pdf`` or ``frames.zip``, the
            timestamp the job's own (a retry writes the same object); the answer carries a
            signed URL
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
from typing import Any, Literal

import numpy as np
from PIL import Image

from serve_app.errors import Conflict
from serve_app.jobs.book import JobDoc
from serve_app.jobs.kinds.base import Attempt, Ended, JobKind, JobTools, made_item_by_item
from serve_app.jobs.spec import Item, JobBase
from serve_app.prints.output import finish
from serve_app.prints.spec import SIZES, PrintOptions, load_prints
from serve_app.projects.models import Project
from serve_app.storage.objects import ObjectStore
from serve_app.stories.exports import CastEntry, Cover, ExportFrame, image_sequence
from serve_app.stories.results import ExportResult
from serve_app.stories.sheet import storyboard_pdf

FILES = {"pdf": "storyboard.pdf", "zip": "frames.zip"}
PRINT_LONG_SIDE = SIZES["portrait"][0]  # a frame's print: 2048 px on its long side


async def printed(tools: JobTools, project_id: str, image: bytes) -> bytes:
    """A frame's print: upscaled to ``PRINT_LONG_SIDE`` at its own aspect by the Upscaler,
    then finished as every print is (the project's chain, the configured DPI, sRGB)."""
    still = Image.open(io.BytesIO(image)).convert("RGB")
    scale = PRINT_LONG_SIDE / max(still.size)
    size = (round(still.width * scale), round(still.height * scale))
    options = PrintOptions(size=f"{size[0]}x{size[1]}")
    upscaled = await tools.deliverer.handles.upscaler.upscale.remote((np.asarray(still), scale))
    config = load_prints()
    steps = config.chain_of(project_id, None)
    picture = Image.fromarray(upscaled.pixels)
    data: bytes = await asyncio.to_thread(finish, picture, options, config, steps, [], None)
    return data


class StoryboardExportJob(JobBase):
    """One export of a project's storyboard; ``soul_id`` is the project's id."""

    kind: Literal["storyboard_export"] = "storyboard_export"
    format: Literal["pdf", "zip"]
    per_page: Literal[1, 2, 4] = 2
    print_ready: bool = False


class NothingApproved(Conflict):
    pass


def export_key(project_id: str, created_at_ts: int, file: str) -> str:
    stamp = dt.datetime.fromtimestamp(created_at_ts / 1000, dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"proj/{project_id}/exports/{stamp}/{file}"


class StoryboardExportKind(JobKind[StoryboardExportJob]):
    name = "storyboard_export"
    spec = StoryboardExportJob
    submitted = False

    def items(self, spec: StoryboardExportJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(0, spec.format)]

    async def check(self, spec: StoryboardExportJob, tools: JobTools) -> None:
        """Nothing more to check: the route read the project under its client."""

    async def run(self, spec: StoryboardExportJob, attempt: Attempt) -> Ended:
        async def make(_: int) -> dict[str, Any]:
            return await self._one(spec, attempt.doc, attempt.tools)

        return await made_item_by_item(attempt, [spec.format], make)

    async def _one(self, spec: StoryboardExportJob, doc: JobDoc, tools: JobTools) -> dict[str, Any]:
        owner, pid = doc.client_id, spec.soul_id
        project: Project = await tools.catalog.get_project.remote(owner, pid)
        line = await tools.catalog.timeline.remote(owner, pid)
        objects = tools.deliverer.objects
        chosen = []
        for scene, frames in line:
            for frame, _, _ in frames:
                if frame.approved_version:
                    version = await tools.catalog.get_frame_version.remote(
                        owner, pid, frame.frame_id, frame.approved_version
                    )
                    chosen.append((scene, version))
        if not chosen:
            raise NothingApproved(f"project {pid!r} has no approved frame to export")
        images = [await asyncio.to_thread(objects.get, v.image_key) for _, v in chosen]
        if spec.print_ready:
            images = [await printed(tools, pid, image) for image in images]

        def made() -> bytes:
            frames = [
                ExportFrame(
                    frame_id=v.frame_id,
                    scene=scene.graph,
                    frame_index=v.frame_index,
                    render_version=v.render_version,
                    image=image,
                    seed=v.seed.seed,
                    pipeline_version=v.pipeline_version,
                    pipeline_hash=v.pipeline_hash,
                    status=v.status,
                )
                for (scene, v), image in zip(chosen, images, strict=True)
            ]
            stamp = dt.datetime.fromtimestamp(doc.created_at_ts / 1000, dt.UTC).isoformat()
            if spec.format == "zip":
                return image_sequence(frames, pid, stamp, spec.print_ready)
            cast = {c.asset_id: c for s, _ in chosen for c in s.graph.characters}
            entries = [CastEntry(name=c.name, pin=c.pin) for c in cast.values()]
            cover = Cover(project_id=pid, project_name=project.name, cast=entries)
            return storyboard_pdf(cover, frames, spec.per_page)

        data = await asyncio.to_thread(made)
        key = export_key(pid, doc.created_at_ts, FILES[spec.format])
        await asyncio.to_thread(objects.put, key, data)
        payload = {
            "format": spec.format,
            "storage_key": key,
            "frames": len(chosen),
            "print_ready": spec.print_ready,
        }
        await tools.catalog.log_export.remote(owner, pid, {**payload, "job_id": doc.job_id})
        return {**payload, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> ExportResult | None:
        item = doc.outcome.items[0] if doc.outcome.items else None
        if item is None:
            return None
        signed = objects.signed_url(item["storage_key"], ttl_s)
        return ExportResult(
            project_id=doc.soul_id, **item, url=signed.url, expires_at=signed.expires_at
        )
