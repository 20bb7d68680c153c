"""The timeline facet: a project's scenes in order with their frames, reordered; a frame
version approved, rejected, or rolled back to the previous approved one; the project's images
(asset portraits and scene frames) listed by type, character and scene.

Every change is an event in the project's log. Approving a version the gate marked
``needs_review`` is allowed, and recorded as an audited exception (``frame.exception_approved``:
who, the note, the failed checks and the full report).
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple

from serve_app.catalog.frames import Frames
from serve_app.catalog.scene_pins import current_scenes
from serve_app.errors import Conflict, InvalidRequest
from serve_app.ids import now_ms
from serve_app.projects.derived import PORTRAIT_ROLES
from serve_app.stories.records import Frame, FrameVersion, Scene

ImageType = Literal["portrait", "scene"]
DECIDABLE = ("passed", "needs_review", "approved", "rejected")


class NotDecidable(Conflict):
    pass


class FrameLine(NamedTuple):
    """A frame on the timeline: the version it shows, and its newest version (the one a
    render planned last: ``rendering``, or ``failed`` with its error, when not shown)."""

    frame: Frame
    shown: FrameVersion | None
    newest: FrameVersion | None


class Timeline(Frames):
    async def timeline(self, owner: str, project_id: str) -> list[tuple[Scene, list[FrameLine]]]:
        """The scenes of each script's last compile by position (then id), each with its frames
        by index, the version each shows now and its newest."""
        await self._project(owner, project_id)
        scenes = sorted(
            await self._current_scenes(project_id), key=lambda s: (s.position, s.scene_id)
        )
        frames: dict[str, list[FrameLine]] = {}
        for frame in await self.store.project_frames(project_id):
            versions = await self.store.frame_versions(project_id, frame.frame_id)
            shown = next((v for v in versions if v.render_version == frame.current_version), None)
            line = FrameLine(frame, shown, versions[-1] if versions else None)
            frames.setdefault(frame.scene_id, []).append(line)
        return [(s, frames.get(s.scene_id, [])) for s in scenes]

    async def _current_scenes(self, project_id: str) -> list[Scene]:
        return await current_scenes(self.store, project_id)

    async def reorder_timeline(self, owner: str, project_id: str, scene_ids: list[str]) -> None:
        """The scenes in this order: every scene of the project, each once (422 otherwise)."""
        await self._project(owner, project_id, active=True)
        scenes = {s.scene_id: s for s in await self._current_scenes(project_id)}
        if sorted(scene_ids) != sorted(scenes):
            missing = sorted(set(scenes) - set(scene_ids))
            unknown = sorted(set(scene_ids) - set(scenes))
            raise InvalidRequest(
                "scene_ids: every scene of the project once "
                f"(missing {missing or 'none'}, unknown {unknown or 'none'})"
            )
        for position, scene_id in enumerate(scene_ids):
            scene = scenes[scene_id]
            if scene.position != position:
                ts = max(now_ms(), scene.updated_at_ts + 1)
                moved = scene.model_copy(update={"position": position, "updated_at_ts": ts})
                await self.store.put_scene(moved)
        await self._story_event(project_id, "timeline.reordered", owner, {"scene_ids": scene_ids})

    async def decide_frame(
        self,
        owner: str,
        project_id: str,
        frame_id: str,
        decision: Literal["approve", "reject"],
        render_version: int | None,
        note: str,
    ) -> tuple[Frame, FrameVersion]:
        """Approve or reject a rendered version (the one the frame shows when not given)."""
        frame = await self.get_frame(owner, project_id, frame_id)
        number = render_version or frame.current_version
        if not number:
            raise NotDecidable(f"frame_id: frame {frame_id} has no rendered version yet")
        version = await self.get_frame_version(owner, project_id, frame_id, number)
        if version.status not in DECIDABLE:
            raise NotDecidable(
                f"render_version: version {number} of frame {frame_id} is {version.status}"
            )
        status: Literal["approved", "rejected"] = (
            "approved" if decision == "approve" else "rejected"
        )
        changed = await self._change_frame_version(owner, project_id, frame_id, number, status)
        approved = number if status == "approved" else None
        if status == "rejected" and frame.approved_version == number:
            approved = 0
        shown = await self._show(project_id, frame_id, number, approved, exactly=True)
        payload: dict[str, Any] = {"frame_id": frame_id, "render_version": number, "note": note}
        await self._story_event(project_id, f"frame.{status}", owner, payload)
        if status == "approved" and version.status == "needs_review":
            report = version.consistency_report or {}
            exception = {**payload, "failed": report.get("failed", []), "report": report}
            await self._story_event(project_id, "frame.exception_approved", owner, exception)
        return shown, changed

    async def rollback_frame(
        self, owner: str, project_id: str, frame_id: str
    ) -> tuple[Frame, FrameVersion]:
        """Show the approved version before the one shown now (409 when there is none)."""
        frame = await self.get_frame(owner, project_id, frame_id)
        versions = await self.store.frame_versions(project_id, frame_id)
        earlier = [
            v
            for v in versions
            if v.status == "approved" and v.render_version < frame.current_version
        ]
        if not earlier:
            raise NotDecidable(f"frame_id: frame {frame_id} has no earlier approved version")
        target = earlier[-1]
        shown = await self._show(
            project_id, frame_id, target.render_version, target.render_version, exactly=True
        )
        payload = {
            "frame_id": frame_id,
            "from_version": frame.current_version,
            "to_version": target.render_version,
        }
        await self._story_event(project_id, "frame.rolled_back", owner, payload)
        return shown, target

    async def project_images(
        self,
        owner: str,
        project_id: str,
        image_type: ImageType | None,
        character_id: str | None,
        scene_id: str | None,
    ) -> list[dict[str, Any]]:
        """What the project holds: character portraits (each version's display and print
        portraits) and scene frames (the version each shows), narrowed by type, character
        and scene."""
        await self._project(owner, project_id)
        out: list[dict[str, Any]] = []
        if image_type in (None, "portrait") and scene_id is None:
            out += await self._portraits(project_id, character_id)
        if image_type in (None, "scene"):
            for scene, frames in await self.timeline(owner, project_id):
                cast = {c.asset_id for c in scene.graph.characters}
                if (scene_id and scene.scene_id != scene_id) or (
                    character_id and character_id not in cast
                ):
                    continue
                out += [
                    {
                        "type": "scene",
                        "scene_id": scene.scene_id,
                        "frame_id": f.frame_id,
                        "render_version": v.render_version,
                        "status": v.status,
                        "character_ids": sorted(cast),
                        "storage_key": v.image_key,
                    }
                    for f, v, _ in frames
                    if v is not None and v.image_key
                ]
        return out

    async def _portraits(self, project_id: str, character_id: str | None) -> list[dict[str, Any]]:
        """The characters' portraits (the ``portrait`` job's display and print, kept as
        derived images of their versions), each with its thumbnail."""
        return [
            {
                "type": "portrait",
                "character_ids": [d.asset_id],
                "asset_id": d.asset_id,
                "version": d.version,
                "role": d.role,
                "storage_key": d.storage_key,
                "thumbnail_key": d.thumbnail_key,
                "width": d.width,
                "height": d.height,
                "label": d.label,
                "dpi": d.dpi,
            }
            for d in await self.store.derived_images(project_id, character_id)
            if d.role in PORTRAIT_ROLES
        ]

    async def log_export(self, owner: str, project_id: str, payload: dict[str, Any]) -> None:
        """An export written (``storyboard_export``), in the project's log."""
        await self._project(owner, project_id)
        await self._story_event(project_id, "export.made", owner, payload)

    async def generate_all_items(
        self, owner: str, project_id: str
    ) -> tuple[list[tuple[str, int, str]], list[str]]:
        """What ``:generate-all`` makes: (asset_id, version, role) of a portrait for each
        character whose latest version is unlocked and has no image, then every scene in
        timeline order."""
        await self._project(owner, project_id, active=True)
        portraits = []
        for asset_id, kind, _ in await self.store.project_asset_labels(project_id):
            versions = await self.store.asset_versions(project_id, asset_id)
            latest = versions[-1] if versions else None
            if kind == "character" and latest and not latest.is_locked and not latest.images:
                portraits.append((asset_id, latest.version, latest.roles[0]))
        scenes = [s.scene_id for s, _ in await self.timeline(owner, project_id)]
        return portraits, scenes
