"""The ``portrait`` job (``POST /v1/projects/{project_id}/assets/{asset_id}:portrait``): a
character version's portrait, for display and for print, stored with the version's images.

    check   (the route, ``portrait_job``) the asset is the caller's (404 otherwise), a character
            (409), and the version has a ``front`` image (409): refused before anything is queued
    display the version's ``front`` image (rendered square at the Renderer's size), framed square:
            the display version, labelled 1024x1024 (its size on an SDXL Renderer at 1024²; the
            result says its real pixels), with a thumbnail (256 px at most)
    print   the display version through the print path (``jobs/kinds/prints.py``): upscaled by
            the Upscaler, framed to exactly 2048x2048, the default chain, PNG at the configured
            DPI (300) with an sRGB profile, validated (``prints/output.py``)
    store   ``proj/{project_id}/asset/{asset_id}/v{n}/portrait.png``, ``….thumb.png`` and
            ``….print.2048x2048.png``, then kept as the version's derived images (roles
            ``portrait`` and ``portrait_print``, each naming the thumbnail:
            ``catalog/asset_derived.py``): images of the version that leave its record as it
            is (a locked version stays immutable); a retry or a repeated job writes the same
            objects and the same rows again, so nothing is duplicated
    owner   every read goes through the job's client (its API key's id)
"""

from __future__ import annotations

import asyncio
import io
from typing import Any, Literal

import numpy as np
from PIL import Image
from pydantic import Field

from serve_app.errors import Conflict
from serve_app.jobs.book import JobDoc, Progress
from serve_app.jobs.kinds.base import Attempt, Ended, JobKind, JobTools
from serve_app.jobs.spec import Item, JobBase
from serve_app.prints.output import finish, frame
from serve_app.prints.spec import PrintOptions, load_prints
from serve_app.projects.derived import DerivedImage, DerivedRole
from serve_app.projects.models import Asset, AssetVersion
from serve_app.projects.results import DISPLAY, PortraitImage, PortraitResult
from serve_app.storage.objects import ObjectStore

PRINT = PrintOptions(size="portrait")  # 2048x2048, cover, PNG, the default chain
THUMBNAIL = 256


class NotAPortrait(Conflict):
    """The asset is not a character, or its version has no ``front`` image to portray."""


class PortraitJob(JobBase):
    """A character version's portrait; ``soul_id`` is the project's id."""

    kind: Literal["portrait"] = "portrait"
    asset_id: str = Field(pattern=r"^ast_[0-9a-z]{26}$")
    version: int = Field(ge=1)
    front_key: str = Field(max_length=300, description="The version's front image (object key).")


async def portrait_job(
    catalog: Any, owner: str, project_id: str, asset_id: str, version: int | None
) -> PortraitJob:
    """The job for a character's version (the latest when ``version`` is None), or 404 / 409."""
    found: tuple[Asset, list[AssetVersion]] = await catalog.get_asset.remote(
        owner, project_id, asset_id
    )
    shown: AssetVersion = await catalog.get_asset_version.remote(
        owner, project_id, asset_id, version
    )
    asset = found[0]
    if asset.asset_type != "character":
        raise NotAPortrait(
            f"asset {asset_id!r} is of type {asset.asset_type}: only a character has a portrait"
        )
    front = shown.images.get("front")
    if front is None:
        raise NotAPortrait(
            f"version: {shown.version} of asset {asset_id!r} has no front image yet: generate it"
        )
    return PortraitJob(
        soul_id=project_id, asset_id=asset_id, version=shown.version, front_key=front
    )


def portrait_key(project_id: str, asset_id: str, version: int, part: str) -> str:
    return f"proj/{project_id}/asset/{asset_id}/v{version}/portrait{part}.png"


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def derived_images(
    spec: PortraitJob, job_id: str, keys: dict[str, str], sizes: dict[str, list[int]], dpi: int
) -> list[DerivedImage]:
    """The display and the print as the version's derived images, each with the thumbnail."""
    printed = "x".join(str(n) for n in PRINT.pixels)
    parts: tuple[tuple[DerivedRole, str, str, int | None], ...] = (
        ("portrait", "display", DISPLAY, None),
        ("portrait_print", "print", printed, dpi),
    )
    return [
        DerivedImage(
            project_id=spec.soul_id,
            asset_id=spec.asset_id,
            version=spec.version,
            role=role,
            storage_key=keys[part],
            thumbnail_key=keys["thumbnail"],
            width=sizes[part][0],
            height=sizes[part][1],
            label=label,
            dpi=dots,
            job_id=job_id,
        )
        for role, part, label, dots in parts
    ]


class PortraitKind(JobKind[PortraitJob]):
    name = "portrait"
    spec = PortraitJob
    submitted = False

    def items(self, spec: PortraitJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(0)]

    async def check(self, spec: PortraitJob, tools: JobTools) -> None:
        """Nothing more to check: the route found the version under its client."""

    async def run(self, spec: PortraitJob, attempt: Attempt) -> Ended:
        tools, outcome = attempt.tools, attempt.doc.outcome
        objects: ObjectStore = tools.deliverer.objects
        owner, pid = attempt.doc.client_id, spec.soul_id
        await portrait_job(tools.catalog, owner, pid, spec.asset_id, spec.version)  # still there
        await attempt.save(outcome, Progress(done=0, total=1, stage="display"))
        data = await asyncio.to_thread(objects.get, spec.front_key)
        front = Image.open(io.BytesIO(data)).convert("RGB")
        side = min(front.size)
        display = frame(front, (side, side), "cover")
        thumb = min(side, THUMBNAIL)  # never enlarged
        thumbnail = display.resize((thumb, thumb), Image.Resampling.LANCZOS)
        keys = {
            part: portrait_key(pid, spec.asset_id, spec.version, suffix)
            for part, suffix in (
                ("display", ""),
                ("thumbnail", ".thumb"),
                ("print", ".print.2048x2048"),
            )
        }
        await asyncio.to_thread(objects.put, keys["display"], png(display))
        await asyncio.to_thread(objects.put, keys["thumbnail"], png(thumbnail))
        await attempt.save(outcome, Progress(done=0, total=1, stage="upscale"))
        upscaled = await tools.deliverer.handles.upscaler.upscale.remote(
            (np.asarray(display), PRINT.pixels[0] / side)
        )
        await attempt.save(outcome, Progress(done=0, total=1, stage="finish"))
        config = load_prints()
        steps = config.chain_of(pid, None)
        still = Image.fromarray(upscaled.pixels)
        printed = await asyncio.to_thread(finish, still, PRINT, config, steps, [], None)
        await asyncio.to_thread(objects.put, keys["print"], printed)
        sizes = {"display": [side, side], "thumbnail": [thumb, thumb], "print": list(PRINT.pixels)}
        derived = derived_images(spec, attempt.doc.job_id, keys, sizes, config.dpi)
        await tools.catalog.add_derived_images.remote(
            owner, pid, spec.asset_id, spec.version, derived
        )
        outcome.items[0] = {"keys": keys, "sizes": sizes, "dpi": config.dpi}
        return Ended("succeeded", outcome)

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> PortraitResult | None:
        made = doc.outcome.items[0] if doc.outcome.items else None
        if made is None:
            return None
        spec = PortraitJob.model_validate(doc.spec)
        images = {}
        for part, key in made["keys"].items():
            signed = objects.signed_url(key, ttl_s)
            width, height = made["sizes"][part]
            images[part] = PortraitImage(
                storage_key=key,
                url=signed.url,
                expires_at=signed.expires_at,
                width=width,
                height=height,
            )
        return PortraitResult(
            project_id=spec.soul_id,
            asset_id=spec.asset_id,
            version=spec.version,
            dpi=made["dpi"],
            **images,
        )
