"""The frames facet: a scene's frames planned for rendering (each new version with its
inherited seed, its exact prompt and its pipeline's hash, written before anything renders),
then recorded as rendered with the gate's verdict.

Planning refuses before it writes: a scene pinning an unlocked asset (or a version unlocked
since the compile) is a 409 naming it; a frame past ``MAX_RERENDERS`` new versions is a 409.
A re-render keeps the frame's seed unless a new one is asked for (``reseed`` + 1); what
changed from the version before is its ``diff``.

A version whose render failed for good is ``failed`` with its error (``fail_frame``, only ever
from ``rendering``: a version recorded meanwhile keeps what it was recorded as); the frame goes
on showing the version it showed. A failed version does not use up one of the frame's
``MAX_RERENDERS`` (the user got nothing from it); ``MAX_VERSIONS`` bounds them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from serve_app.catalog.stories import Stories
from serve_app.errors import Busy, Conflict
from serve_app.ids import now_ms
from serve_app.stories.composition import backdrop, frame_seed, render_prompt
from serve_app.stories.pipeline import RenderSettings, describe
from serve_app.stories.records import (
    MAX_RERENDERS,
    MAX_VERSIONS,
    Frame,
    FrameStatus,
    FrameVersion,
    frame_id_of,
    no_frame,
)

ATTEMPTS = 8
MAX_ERROR_CHARS = 500  # of a failed version's error, and of its frame.failed event


class TooManyRerenders(Conflict):
    pass


class Frames(Stories):
    async def plan_frames(
        self,
        owner: str,
        project_id: str,
        scene_id: str,
        indexes: list[int],
        new_seed: bool = False,
        job_id: str | None = None,
    ) -> list[FrameVersion]:
        """The next version of each frame ``indexes`` of the scene, status ``rendering``.
        ``job_id``: the job planning them as it runs (``generate_all``); a frame whose newest
        version that job planned and has not finished (a retried attempt) is given that version
        again, not a new one: a retry never uses up a frame's re-renders."""
        project = await self._project(owner, project_id, active=True)
        scene, registry, style = await self.scene_assets(owner, project_id, scene_id)
        prompt = render_prompt(scene.graph, registry, style)  # 409 naming unlocked assets
        settings = RenderSettings(
            base_model=project.style.base_model_ref,
            environment_strength=project.composition.environment_strength,
            prop_strength=project.composition.prop_strength,
            scenery_strength=project.composition.scenery_strength,
        )
        start = backdrop(scene.graph, registry, settings.environment_strength)
        placed = settings.placements(scene.graph, registry)
        planned: list[tuple[Frame | None, FrameVersion]] = []
        again: dict[str, FrameVersion] = {}  # stored already, planned by an earlier attempt
        for index in indexes:
            frame_id = frame_id_of(scene_id, index)
            frame = await self.store.get_frame(project_id, frame_id)
            versions = await self.store.frame_versions(project_id, frame_id)
            last = versions[-1] if versions else None
            if job_id and last and last.planned_by == job_id and last.status == "rendering":
                again[frame_id] = last
                continue
            if len([v for v in versions if v.status != "failed"]) > MAX_RERENDERS:
                raise TooManyRerenders(
                    f"frame_id: frame {frame_id} was rendered again {MAX_RERENDERS} times already"
                )
            if len(versions) >= MAX_VERSIONS:
                raise TooManyRerenders(
                    f"frame_id: frame {frame_id} has {MAX_VERSIONS} versions, the most one keeps"
                )
            reseed = (last.seed.reseed + int(new_seed)) if last else 0
            seed = frame_seed(project_id, scene_id, index, reseed)
            steps = describe(scene.graph, prompt, seed, registry, settings)
            version = FrameVersion(
                project_id=project_id,
                frame_id=frame_id,
                render_version=len(versions) + 1,
                scene_id=scene_id,
                frame_index=index,
                graph_hash=scene.graph.graph_hash,
                seed=seed,
                prompt=prompt,
                pipeline_version=steps.pipeline_version,
                pipeline_hash=steps.pipeline_hash,
                backdrop=start,
                placements=placed,
                planned_by=job_id,
            )
            planned.append((frame, version.model_copy(update={"diff": diff(last, version)})))
        made = {v.frame_id: await self._insert_version(owner, f, v) for f, v in planned}
        return [{**made, **again}[frame_id_of(scene_id, i)] for i in indexes]

    async def _insert_version(
        self, owner: str, frame: Frame | None, version: FrameVersion
    ) -> FrameVersion:
        pid, fid = version.project_id, version.frame_id
        ts = now_ms()
        if frame is None:
            made = Frame(
                project_id=pid,
                frame_id=fid,
                scene_id=version.scene_id,
                frame_index=version.frame_index,
                current_version=0,
                created_at_ts=ts,
                updated_at_ts=ts,
            )
            await self.store.insert_frame(made)
        version = version.model_copy(update={"created_at_ts": ts, "updated_at_ts": ts})
        if not await self.store.insert_frame_version(version):
            raise Busy(f"frame {fid}: version {version.render_version} was planned meanwhile")
        payload = {"frame_id": fid, "render_version": version.render_version, "diff": version.diff}
        await self._story_event(pid, "frame.planned", owner, payload)
        return version

    async def get_frame(self, owner: str, project_id: str, frame_id: str) -> Frame:
        await self._project(owner, project_id)
        found = await self.store.get_frame(project_id, frame_id)
        if found is None:
            raise no_frame(project_id, frame_id)
        return found

    async def get_frame_version(
        self, owner: str, project_id: str, frame_id: str, render_version: int
    ) -> FrameVersion:
        await self._project(owner, project_id)
        found = await self.store.get_frame_version(project_id, frame_id, render_version)
        if found is None:
            raise no_frame(project_id, frame_id, render_version)
        return found

    async def frame_versions(
        self, owner: str, project_id: str, frame_id: str
    ) -> list[FrameVersion]:
        await self.get_frame(owner, project_id, frame_id)
        return await self.store.frame_versions(project_id, frame_id)

    async def record_frame(
        self,
        owner: str,
        project_id: str,
        frame_id: str,
        render_version: int,
        image_key: str,
        report: dict[str, Any],
    ) -> FrameVersion:
        """A version rendered: its image and the gate's report (``passed`` or
        ``needs_review``); the frame shows it from now on."""
        status: FrameStatus = "passed" if report["passed"] else "needs_review"
        version = await self._change_frame_version(
            owner, project_id, frame_id, render_version, status, report, image_key
        )
        await self._show(project_id, frame_id, render_version, None)
        payload = {"frame_id": frame_id, "render_version": render_version, "status": status}
        if not report["passed"]:
            payload["failed"] = report["failed"]
        await self._story_event(project_id, "frame.rendered", owner, payload)
        return version

    async def fail_frame(
        self, owner: str, project_id: str, frame_id: str, render_version: int, error: str
    ) -> FrameVersion | None:
        """A version whose render failed for good: ``failed`` with ``error``, if it is still
        ``rendering`` (None: it was not; nothing written). The frame shows what it showed."""
        error = error[:MAX_ERROR_CHARS]  # in the version and its event alike

        def failed(current: FrameVersion) -> dict[str, Any] | None:
            if current.status != "rendering":
                return None
            return {"status": "failed", "error": error}

        version = await self._changed_version(owner, project_id, frame_id, render_version, failed)
        if version is not None:
            payload = {"frame_id": frame_id, "render_version": render_version, "error": error}
            await self._story_event(project_id, "frame.failed", owner, payload)
        return version

    async def _change_frame_version(
        self,
        owner: str,
        project_id: str,
        frame_id: str,
        render_version: int,
        status: FrameStatus,
        report: dict[str, Any] | None = None,
        image_key: str | None = None,
    ) -> FrameVersion:
        def change(current: FrameVersion) -> dict[str, Any]:
            return {
                "status": status,
                "consistency_report": report or current.consistency_report,
                "image_key": image_key or current.image_key,
            }

        version = await self._changed_version(owner, project_id, frame_id, render_version, change)
        assert version is not None  # ``change`` always changes it
        return version

    async def _changed_version(
        self,
        owner: str,
        project_id: str,
        frame_id: str,
        render_version: int,
        change: Callable[[FrameVersion], dict[str, Any] | None],
    ) -> FrameVersion | None:
        """The version with ``change(current)``'s fields, fenced on what was read (None:
        ``change`` had nothing to change)."""
        for _ in range(ATTEMPTS):
            current = await self.get_frame_version(owner, project_id, frame_id, render_version)
            fields = change(current)
            if fields is None:
                return None
            ts = max(now_ms(), current.updated_at_ts + 1)
            changed = current.model_copy(update={**fields, "updated_at_ts": ts})
            if await self.store.update_frame_version(changed, current.updated_at_ts):
                return changed
        raise Busy(f"frame {frame_id} version {render_version} is busy; retry")

    async def _show(
        self,
        project_id: str,
        frame_id: str,
        current: int | None,
        approved: int | None,
        exactly: bool = False,
    ) -> Frame:
        """The frame now shows ``current`` (None: as before; a lower one only ``exactly``) and
        its approved version is ``approved`` (None: as before; 0: none)."""
        for _ in range(ATTEMPTS):
            frame = await self.store.get_frame(project_id, frame_id)
            if frame is None:
                raise no_frame(project_id, frame_id)
            shown = max(frame.current_version, current or 0)
            if exactly and current is not None:
                shown = current
            kept = frame.approved_version if approved is None else (approved or None)
            changed = frame.model_copy(
                update={
                    "current_version": shown,
                    "approved_version": kept,
                    "updated_at_ts": max(now_ms(), frame.updated_at_ts + 1),
                }
            )
            if await self.store.update_frame(changed, frame.updated_at_ts):
                return changed
        raise Busy(f"frame {frame_id} is busy; retry")


def diff(last: FrameVersion | None, now: FrameVersion) -> dict[str, Any]:
    """What a new version of a frame changes from the one before: each field, from and to."""
    if last is None:
        return {}
    fields = {
        "seed": (last.seed.seed, now.seed.seed),
        "reseed": (last.seed.reseed, now.seed.reseed),
        "prompt": (last.prompt.prompt, now.prompt.prompt),
        "negative_prompt": (last.prompt.negative_prompt, now.prompt.negative_prompt),
        "graph_hash": (last.graph_hash, now.graph_hash),
        "pipeline_hash": (last.pipeline_hash, now.pipeline_hash),
    }
    changed = {k: {"from": a, "to": b} for k, (a, b) in fields.items() if a != b}
    return {"from_version": last.render_version, **changed}
