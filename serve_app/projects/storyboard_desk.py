"""The storyboard routes' logic that is more than one Catalog call: a scene's frames planned
(seed, exact prompt, pipeline hash written first) and queued as a ``scene_render`` job; a render
job's frames planned again and queued (``:rerender``). Every call names the caller's client."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from serve_app.api.protocol import JobAccepted, JobView
from serve_app.errors import Conflict
from serve_app.jobs.desk import JobDesk, UnknownJob
from serve_app.jobs.kinds import KINDS
from serve_app.jobs.kinds.generate_all import GenerateAllJob, Portrait
from serve_app.jobs.kinds.scene_render import FrameRef, SceneRenderJob
from serve_app.jobs.kinds.storyboard_export import StoryboardExportJob
from serve_app.stories.records import FrameVersion


@dataclass(frozen=True)
class StoryboardDesk:
    catalog: Any
    jobs: JobDesk

    async def render(self, owner: str, project_id: str, scene_id: str, frames: int) -> JobAccepted:
        """Frames ``0 … frames-1`` of the scene, each at its next version; 409 naming any
        asset the scene pins without a locked version, before anything is written."""
        await self.catalog.get_scene.remote(owner, project_id, scene_id)  # 404 before any work
        return await self._planned(owner, project_id, scene_id, list(range(frames)), False)

    async def rerender(
        self, owner: str, project_id: str, job_id: str, frame_ids: list[str], new_seed: bool
    ) -> JobAccepted:
        """The frames of a render job (all, or those named) at their next version: the same
        seed unless ``new_seed``; at most ``MAX_RERENDERS`` times a frame (409 after)."""
        spec = await self.spec_of(owner, project_id, job_id)
        indexes = {f.frame_id: int(f.frame_id.rsplit("_", 1)[1]) for f in spec.frames}
        wanted = frame_ids or list(indexes)
        if unknown := [f for f in wanted if f not in indexes]:
            raise UnknownJob(f"{job_id}: it rendered no frame {', '.join(unknown)}")
        chosen = [indexes[f] for f in wanted]
        return await self._planned(owner, project_id, spec.scene_id, chosen, new_seed)

    async def export(
        self,
        owner: str,
        project_id: str,
        file: Literal["pdf", "zip"],
        per_page: Literal[1, 2, 4],
        print_ready: bool = False,
    ) -> JobAccepted:
        """The project's approved frames as a PDF sheet or a zip, written by a job (each
        frame's print when ``print_ready``)."""
        await self.catalog.get_project.remote(owner, project_id)  # 404 before any work
        spec = StoryboardExportJob(
            soul_id=project_id, format=file, per_page=per_page, print_ready=print_ready
        )
        return await self.jobs.submit(owner, spec)

    async def generate_all(self, owner: str, project_id: str) -> JobAccepted:
        """One job: every missing portrait, then frame 0 of every scene (409: nothing to do)."""
        spec = await self._everything(owner, project_id)
        if not spec.portraits and not spec.scenes:
            raise Conflict(f"project {project_id!r} has no portrait to make and no scene")
        return await self.jobs.submit(owner, spec)

    async def generate_all_estimate(self, owner: str, project_id: str) -> dict[str, Any]:
        """What ``generate_all`` would make now and how long it would take: each stage's count
        times its measured time per item (or its configured default), after the queue ahead."""
        stages = KINDS["generate_all"].stages(await self._everything(owner, project_id))
        estimate: dict[str, Any] = await self.catalog.estimate_stages.remote(stages, project_id)
        return {"project_id": project_id, **estimate}

    async def _everything(self, owner: str, project_id: str) -> GenerateAllJob:
        portraits, scenes = await self.catalog.generate_all_items.remote(owner, project_id)
        return GenerateAllJob(
            soul_id=project_id,
            portraits=[Portrait(asset_id=a, version=v, role=r) for a, v, r in portraits],
            scenes=scenes,
        )

    async def view(self, owner: str, project_id: str, job_id: str) -> JobView:
        await self.spec_of(owner, project_id, job_id)
        return await self.jobs.view(owner, job_id)

    async def spec_of(self, owner: str, project_id: str, job_id: str) -> SceneRenderJob:
        """The render job's spec: a job of this client, a ``scene_render`` of this project."""
        await self.catalog.get_project.remote(owner, project_id)
        doc = await self.jobs.job(owner, job_id)
        try:
            spec = SceneRenderJob.model_validate(doc.spec)  # another kind's spec is refused
        except ValidationError as exc:
            raise UnknownJob(job_id) from exc
        if spec.soul_id != project_id:
            raise UnknownJob(job_id)
        return spec

    async def _planned(
        self, owner: str, project_id: str, scene_id: str, indexes: list[int], new_seed: bool
    ) -> JobAccepted:
        """The frames' next versions planned and queued as one job; the job's quota slot is
        claimed first (429 before a version is written) and given back when planning fails."""
        ticket = await self.jobs.admit(owner)
        try:
            planned: list[FrameVersion] = await self.catalog.plan_frames.remote(
                owner, project_id, scene_id, indexes, new_seed
            )
        except BaseException:
            await self.jobs.release(owner, ticket)
            raise
        spec = SceneRenderJob(
            soul_id=project_id,
            scene_id=scene_id,
            frames=[
                FrameRef(frame_id=v.frame_id, render_version=v.render_version) for v in planned
            ],
        )
        return await self.jobs.submit(owner, spec, ticket)
