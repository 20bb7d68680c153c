"""The ``generate_all`` job (``POST /v1/projects/{project_id}:generate-all``): a project's
missing portraits, then its scenes, in one job with overall and per-item progress.

    items:  first a portrait (the first role) of every character whose latest version is
            unlocked and has no image yet, then frame 0 of every scene in timeline order; the
            route lists them when it queues the job
    each:   a portrait as ``asset_generate`` renders a role; a scene as ``scene_render`` renders
            a frame (planned here, under the job's id: a scene with an unlocked asset fails its
            item, a 409)
    at most ``MAX_CONCURRENT`` renders of the project at a time (portraits all before scenes);
            each item's outcome is saved as it ends, so a retried attempt goes on from there;
            an attempt that fails stops its other renders before it ends (none runs on unseen)
    retry   a retried attempt renders the frame versions the job planned and did not finish
            again (``plan_frames`` with the job's id), never new ones: a retry uses up no
            frame's re-renders
    partial an item that fails for good fails only itself: the job ends ``partial``
    settle  a frame version the job planned and did not make is ``failed`` with why
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve_app.errors import root_cause
from serve_app.jobs.book import JobDoc, Progress
from serve_app.jobs.kinds.asset_generate import AssetGenerateJob, AssetGenerateKind
from serve_app.jobs.kinds.base import (
    Attempt,
    Ended,
    JobKind,
    JobTools,
    items_ended,
    items_left,
    made_or_failed,
    unfinished,
)
from serve_app.jobs.kinds.scene_render import FrameRef, render_frame
from serve_app.jobs.spec import Item, JobBase
from serve_app.projects.models import Project
from serve_app.prompts import style_id
from serve_app.storage.objects import ObjectStore
from serve_app.stories.gate import GateConfig
from serve_app.stories.records import FrameNotFound, FrameVersion, frame_id_of
from serve_app.stories.results import GenerateAllResult

MAX_CONCURRENT = 5  # renders of one project at a time


class Portrait(BaseModel):
    asset_id: str = Field(pattern=r"^ast_[0-9a-z]{26}$")
    version: int = Field(ge=1)
    role: str


class GenerateAllJob(JobBase):
    """A project's missing portraits and its scenes; ``soul_id`` is the project's id."""

    kind: Literal["generate_all"] = "generate_all"
    portraits: list[Portrait] = Field(default_factory=list, max_length=200)
    scenes: list[str] = Field(default_factory=list, max_length=500)
    gate: GateConfig = Field(default_factory=GateConfig)


async def all_or_none(works: Iterable[Awaitable[None]]) -> None:
    """Every work at once; when one raises, the others are cancelled and awaited before it is
    raised (an attempt that fails leaves nothing of its own running)."""
    tasks = [asyncio.ensure_future(w) for w in works]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def item_names(spec: GenerateAllJob) -> list[str]:
    """Each item's name: ``portrait:<asset_id>`` or ``scene:<scene_id>``."""
    return [f"portrait:{p.asset_id}" for p in spec.portraits] + [f"scene:{s}" for s in spec.scenes]


class GenerateAllKind(JobKind[GenerateAllJob]):
    name = "generate_all"
    spec = GenerateAllJob
    submitted = False

    def items(self, spec: GenerateAllJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(i, name) for i, name in enumerate(item_names(spec))]

    def stages(self, spec: GenerateAllJob) -> dict[str, int]:
        """Its estimate: its portraits at a portrait's measured time, its frames at a frame's."""
        return {"portrait": len(spec.portraits), "frame": len(spec.scenes)}

    async def check(self, spec: GenerateAllJob, tools: JobTools) -> None:
        """Nothing more to check: the route listed the items under its client."""

    async def run(self, spec: GenerateAllJob, attempt: Attempt) -> Ended:
        doc, tools = attempt.doc, attempt.tools
        project: Project = await tools.catalog.get_project.remote(doc.client_id, spec.soul_id)
        names = item_names(spec)
        outcome = attempt.doc.outcome
        slots = asyncio.Semaphore(MAX_CONCURRENT)
        saving = asyncio.Lock()

        async def one(index: int) -> None:
            async with slots:
                await made_or_failed(outcome, index, partial(self._item, spec, doc, tools, project))
            async with saving:
                total = len(outcome.items)
                progress = Progress(done=outcome.done, total=total, stage=names[index], item=index)
                await attempt.save(outcome, progress)

        todo = items_left(outcome)
        portraits = [i for i in todo if i < len(spec.portraits)]
        for batch in (portraits, [i for i in todo if i >= len(spec.portraits)]):
            await all_or_none(one(i) for i in batch)
        return items_ended(outcome)

    async def settle(self, spec: GenerateAllJob, doc: JobDoc, tools: JobTools) -> None:
        """Each frame version the job planned and did not make is ``failed`` with why."""
        owner, pid = doc.client_id, spec.soul_id
        for index, error in unfinished(doc).items():
            if index < len(spec.portraits):
                continue  # a portrait writes nothing before it is made
            frame_id = frame_id_of(spec.scenes[index - len(spec.portraits)], 0)
            try:
                versions = await tools.catalog.frame_versions.remote(owner, pid, frame_id)
            except Exception as exc:
                if isinstance(root_cause(exc), FrameNotFound):
                    continue  # refused before it was planned
                raise
            for v in versions:
                if v.planned_by == doc.job_id and v.status == "rendering":
                    await tools.catalog.fail_frame.remote(
                        owner, pid, frame_id, v.render_version, error
                    )

    async def _item(
        self, spec: GenerateAllJob, doc: JobDoc, tools: JobTools, project: Project, index: int
    ) -> dict[str, Any]:
        owner, pid = doc.client_id, spec.soul_id
        if index < len(spec.portraits):
            p = spec.portraits[index]
            asset, _ = await tools.catalog.get_asset.remote(owner, pid, p.asset_id)
            job = AssetGenerateJob(
                soul_id=pid,
                asset_id=p.asset_id,
                asset_type=asset.asset_type,
                version=p.version,
                roles=[p.role],
            )
            style = project.style.profile(pid)
            renderer = tools.deliverer.handles.renderer.options(
                multiplexed_model_id=style_id(style)
            )
            made = await AssetGenerateKind().role_image(job, doc, tools, renderer, project, p.role)
            return {"type": "portrait", "asset_id": p.asset_id, **made}
        scene_id = spec.scenes[index - len(spec.portraits)]
        (planned,) = await tools.catalog.plan_frames.remote(
            owner, pid, scene_id, [0], False, doc.job_id
        )
        version: FrameVersion = planned
        ref = FrameRef(frame_id=version.frame_id, render_version=version.render_version)
        made = await render_frame(tools, owner, project, ref, spec.gate)
        return {"type": "scene", "scene_id": scene_id, **made}

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> GenerateAllResult | None:
        spec = GenerateAllJob.model_validate(doc.spec)
        names = item_names(spec)
        failed = {f.index: f.error.detail for f in doc.outcome.failed}
        items = []
        for index, item in enumerate(doc.outcome.items):
            entry: dict[str, Any] = {"item": names[index], "status": "pending"}
            if item is not None:
                signed = objects.signed_url(item["storage_key"], ttl_s)
                entry.update(status="made", storage_key=item["storage_key"], url=signed.url)
                entry["frame_status"] = item.get("status")
            elif index in failed:
                entry.update(status="failed", error=failed[index])
            items.append(entry)
        return GenerateAllResult(project_id=spec.soul_id, items=items)
