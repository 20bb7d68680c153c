"""The ``asset_generate`` job (``POST /v1/projects/{project_id}/assets:generate`` and
``…/assets/{asset_id}:version``, their own routes): an unlocked asset version's images, one per
role, in the project's style.

    roles:  the asset type's defaults are in ``config/assets.yaml``; a character's are its
            identity sheet's (``config/sheet.yaml``) views and expressions
    items:  the version's roles, in order; role ``i`` renders with seed
            ``seed_bank[i % len(seed_bank)]`` (``AssetVersion.seed_for``), so the same version and
            seed bank give the same images (on the same hardware: byte for byte on CPU)
    each:   the canonical prompt, the role's words and the project's style-anchor prompt, in
            the project's style; a PNG at ``proj/{project_id}/asset/{asset_id}/v{n}/{role}.png``
            (a retry writes the same object again), recorded as the version's image of that role,
            the generation (prompt, seed) logged in the project's events; then its image
            embedding (Dedupe's model, when it has one) kept for search by image
    owner:  every read and write goes through the job's client (its API key's id): a project of
            another client is not found
    partial a render that fails for good fails its item only (the job ends ``partial``); a
            version locked meanwhile fails the rest
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from serve_app.characters.verdicts import IdentityUse
from serve_app.jobs.book import JobDoc
from serve_app.jobs.kinds.base import (
    Attempt,
    Ended,
    JobKind,
    JobTools,
    made_item_by_item,
)
from serve_app.jobs.kinds.character_sheet import png_of, sheet_grid
from serve_app.jobs.spec import Item, JobBase
from serve_app.projects.characters import rendered_with
from serve_app.projects.image_search import image_embedding
from serve_app.projects.models import AssetLocked, AssetVersion, Project, Role
from serve_app.projects.results import AssetImage, AssetResult
from serve_app.prompts import render_prompt, style_id
from serve_app.schemas import Frames, RenderJob
from serve_app.settings import config_file
from serve_app.storage.objects import ObjectStore


class AssetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    roles: dict[str, dict[str, str]] = Field(description="Asset type -> role -> words.")


@cache
def _roles(path: str = "config/assets.yaml") -> dict[str, dict[str, str]]:
    roles = AssetsFile.model_validate(yaml.safe_load(config_file(path).read_text())).roles
    first = sheet_grid()[0][1]
    character = {
        view if expression == first else f"{view}_{expression}": words
        for view, expression, words in sheet_grid()
    }
    return {**roles, "character": character}


def default_roles(asset_type: str) -> list[str]:
    return list(_roles()[asset_type])


def role_words(asset_type: str, role: str) -> str:
    return _roles()[asset_type].get(role, role.replace("_", " "))


class AssetGenerateJob(JobBase):
    """The images of one asset version; ``soul_id`` is the project's id (its style's name)."""

    kind: Literal["asset_generate"] = "asset_generate"
    asset_id: str = Field(pattern=r"^ast_[0-9a-z]{26}$")
    asset_type: str
    version: int = Field(ge=1)
    roles: list[Role] = Field(min_length=1, max_length=12)


def asset_key(project_id: str, asset_id: str, version: int, role: str) -> str:
    return f"proj/{project_id}/asset/{asset_id}/v{version}/{role}.png"


def asset_render(
    project: Project,
    version: AssetVersion,
    asset_type: str,
    role: str,
    identity: IdentityUse | None = None,
) -> RenderJob:
    """The render of one role: what the asset is, the role's words and the project's anchor
    prompt, in the project's style, with the role's seed; a character of a soul conditioned on
    its ``identity`` version (``projects/characters.py``)."""
    style = project.style.profile(project.project_id)
    words = [version.canonical_prompt, role_words(asset_type, role), project.style_anchor_prompt]
    prompt, negative = render_prompt(style, ", ".join(w for w in words if w))
    return RenderJob(
        style_id=style_id(style),
        base_model_ref=style.base_model_ref,
        lora_ids=style.lora_ids,
        prompt=prompt,
        negative_prompt=", ".join(n for n in (version.negative_prompt, negative) if n),
        seed=version.seed_for(role),
        identity=None if identity is None else identity.conditioning,
    )


class AssetGenerateKind(JobKind[AssetGenerateJob]):
    name = "asset_generate"
    spec = AssetGenerateJob
    submitted = False

    def items(self, spec: AssetGenerateJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(i, role) for i, role in enumerate(spec.roles)]

    async def check(self, spec: AssetGenerateJob, tools: JobTools) -> None:
        """Nothing more to check: the route made (or read) the version under its client."""

    async def run(self, spec: AssetGenerateJob, attempt: Attempt) -> Ended:
        doc, tools = attempt.doc, attempt.tools
        project: Project = await tools.catalog.get_project.remote(doc.client_id, spec.soul_id)
        style = project.style.profile(project.project_id)
        renderer = tools.deliverer.handles.renderer.options(multiplexed_model_id=style_id(style))

        async def make(index: int) -> dict[str, Any]:
            return await self.role_image(spec, doc, tools, renderer, project, spec.roles[index])

        return await made_item_by_item(attempt, spec.roles, make)

    async def role_image(
        self,
        spec: AssetGenerateJob,
        doc: JobDoc,
        tools: JobTools,
        renderer: Any,
        project: Project,
        role: str,
    ) -> dict[str, Any]:
        """One role: rendered, stored, recorded on the version (refused once it is locked)."""
        owner, pid = doc.client_id, spec.soul_id
        version: AssetVersion = await tools.catalog.get_asset_version.remote(
            owner, pid, spec.asset_id, spec.version
        )
        if version.is_locked:  # refused before anything is rendered or stored
            raise AssetLocked(f"version: {spec.version} of asset {spec.asset_id!r} is locked")
        identity = await rendered_with(tools.catalog, version)
        job = asset_render(project, version, spec.asset_type, role, identity)
        frames: Frames = await renderer.render.remote(job)
        key = asset_key(pid, spec.asset_id, spec.version, role)
        await asyncio.to_thread(tools.deliverer.objects.put, key, png_of(frames))
        generation = {
            "role": role,
            "seed": job.seed,
            "prompt": job.prompt,
            "storage_key": key,
            "job_id": doc.job_id,
            **({} if identity is None else {"identity_version": identity.version}),
        }
        await tools.catalog.add_asset_image.remote(
            owner, pid, spec.asset_id, spec.version, role, key, generation
        )
        embedded = await image_embedding(tools.deliverer.handles.dedupe, frames)
        if embedded is not None:  # what a search by image compares (projects/image_search.py)
            await tools.catalog.add_asset_image_embed.remote(
                owner, pid, spec.asset_id, spec.version, role, *embedded
            )
        return {"role": role, "seed": job.seed, "storage_key": key}

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> AssetResult | None:
        spec = AssetGenerateJob.model_validate(doc.spec)
        images: list[AssetImage | None] = []
        for item in doc.outcome.items:
            if item is None:
                images.append(None)
                continue
            signed = objects.signed_url(item["storage_key"], ttl_s)
            images.append(AssetImage(**item, url=signed.url, expires_at=signed.expires_at))
        return AssetResult(
            project_id=spec.soul_id, asset_id=spec.asset_id, version=spec.version, images=images
        )
