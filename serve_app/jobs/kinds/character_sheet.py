"""The ``character_sheet`` job (``POST /souls/{soul_id}/identity/{version}/sheet``, its own
route): an unlocked identity version's canonical description rendered as every view by every
expression of ``config/sheet.yaml``, stored as the version's references.

    items:  view-major (front neutral, front smiling, three-quarter neutral, ...); item ``i``
            renders with seed ``seed_bank[i % len(seed_bank)]``, so the same version and seed
            bank give the same sheet (on the same hardware: byte for byte on CPU)
    each:   rendered in the soul's style, encoded as a PNG under a key named by its view and
            expression (a retry writes the same object again), added to the version's
            references unless already there; progress is saved per view
    partial a render that fails for good fails its item only (the job ends ``partial``); a
            version locked or taken meanwhile fails the rest
"""

from __future__ import annotations

import asyncio
import io
from functools import cache
from typing import Any, Literal

import yaml
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.protocol import SheetResult, SheetView
from serve_app.characters.identities import IdentityVersion
from serve_app.delivery.lookups import style_of
from serve_app.errors import InvalidRequest
from serve_app.jobs.book import JobDoc
from serve_app.jobs.kinds.base import (
    Attempt,
    Ended,
    JobKind,
    JobTools,
    made_item_by_item,
)
from serve_app.jobs.spec import Item, JobBase
from serve_app.prompts import render_prompt, style_id
from serve_app.schemas import Frames, RenderJob, StyleProfile
from serve_app.settings import config_file
from serve_app.storage.objects import ObjectStore


class SheetFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    views: dict[str, str] = Field(min_length=1)
    expressions: dict[str, str] = Field(min_length=1)


@cache
def sheet_grid(path: str = "config/sheet.yaml") -> list[tuple[str, str, str]]:
    """Every (view, expression, words), view-major."""
    sheet = SheetFile.model_validate(yaml.safe_load(config_file(path).read_text()))
    return [
        (view, expression, f"{view_words}, {expression_words}")
        for view, view_words in sheet.views.items()
        for expression, expression_words in sheet.expressions.items()
    ]


class CharacterSheetJob(JobBase):
    """A sheet of an unlocked identity version."""

    kind: Literal["character_sheet"] = "character_sheet"
    version: int = Field(ge=1, description="The identity version the sheet is made for.")


def sheet_key(soul_id: str, version: int, view: str, expression: str) -> str:
    return f"soul/{soul_id}/identity/{version}/reference/sheet-{view}-{expression}.png"


def sheet_render(
    identity: IdentityVersion, style: StyleProfile, index: int, words: str
) -> RenderJob:
    """Item ``index`` of the sheet: the canonical prompt with its view and expression, in the
    soul's style, with its seed of the bank."""
    prompt, negative = render_prompt(style, f"{identity.prompt}, {words}")
    negatives = ", ".join(n for n in (identity.negative_prompt, negative) if n)
    return RenderJob(
        style_id=style_id(style),
        base_model_ref=style.base_model_ref,
        lora_ids=style.lora_ids,
        prompt=prompt,
        negative_prompt=negatives,
        seed=identity.seed_bank[index % len(identity.seed_bank)],
    )


def png_of(frames: Frames) -> bytes:
    out = io.BytesIO()
    Image.fromarray(frames.pixels[0]).save(out, format="PNG")
    return out.getvalue()


class CharacterSheetKind(JobKind[CharacterSheetJob]):
    name = "character_sheet"
    spec = CharacterSheetJob
    submitted = False

    def items(self, spec: CharacterSheetJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(i, words) for i, (_, _, words) in enumerate(sheet_grid())]

    async def check(self, spec: CharacterSheetJob, tools: JobTools) -> None:
        identity: IdentityVersion = await tools.catalog.get_identity.remote(
            spec.soul_id, spec.version
        )
        if identity.locked:
            raise InvalidRequest(f"version: {spec.version} is locked; sheets are for unlocked ones")
        await style_of(tools.catalog, spec.soul_id)  # 409 without a style

    async def run(self, spec: CharacterSheetJob, attempt: Attempt) -> Ended:
        doc, tools = attempt.doc, attempt.tools
        style = await style_of(tools.catalog, spec.soul_id)
        renderer = tools.deliverer.handles.renderer.options(multiplexed_model_id=style_id(style))
        grid = sheet_grid()

        async def make(index: int) -> dict[str, Any]:
            view, expression, words = grid[index]
            made = await self._one(
                spec, doc, tools, renderer, style, index, view, expression, words
            )
            return made.model_dump()

        return await made_item_by_item(attempt, [view for view, _, _ in grid], make)

    async def _one(
        self,
        spec: CharacterSheetJob,
        doc: JobDoc,
        tools: JobTools,
        renderer: Any,
        style: StyleProfile,
        index: int,
        view: str,
        expression: str,
        words: str,
    ) -> SheetView:
        """One view: rendered, stored, added to the version (by the job's client, its maker)."""
        identity: IdentityVersion = await tools.catalog.editable_identity.remote(
            spec.soul_id, spec.version, doc.client_id
        )
        job = sheet_render(identity, style, index, words)
        frames: Frames = await renderer.render.remote(job)
        key = sheet_key(spec.soul_id, spec.version, view, expression)
        await asyncio.to_thread(tools.deliverer.objects.put, key, png_of(frames))
        if key not in identity.references:
            await tools.catalog.add_identity_references.remote(
                spec.soul_id, spec.version, [key], doc.client_id
            )
        return SheetView(view=view, expression=expression, seed=job.seed, storage_key=key)

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> SheetResult | None:
        spec = CharacterSheetJob.model_validate(doc.spec)
        views = [
            None if item is None else SheetView.model_validate(item) for item in doc.outcome.items
        ]
        return SheetResult(soul_id=doc.soul_id, version=spec.version, views=views)
