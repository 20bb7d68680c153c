"""The storyboards facet: a project's scripts, compiled against its assets into scenes, and
what a scene pins (the registry composition reads, what blocks a render).

Every method takes the caller's ``owner`` and the ``project_id`` and reads the project under
that owner first: another client's project is ``ProjectNotFound`` (404). Every change appends
an event to the project's log (``project_event``).

The compiler's asset directory is the project's assets: each by its name and the aliases its
latest version lists in ``metadata.aliases``, pinned at its latest locked version.
"""

from __future__ import annotations

from typing import Any

from serve_app.catalog.facet import Facet
from serve_app.catalog.projects import append_event
from serve_app.ids import now_ms
from serve_app.projects.models import Project, ProjectArchived, no_project
from serve_app.stories.assets import AssetTable, DirectoryEntry
from serve_app.stories.compiler import compile_script
from serve_app.stories.composition import Blocker, PinnedAsset, ProjectStyle, blockers
from serve_app.stories.records import (
    Scene,
    Script,
    ScriptDraft,
    new_script_id,
    no_scene,
    no_script,
    scene_id_of,
)

# IP-Adapter scale of a character's image (the others' scales are the project's composition:
# the environment's image is the frame's backdrop, a prop's conditions its region)
STRENGTH = {"character": 0.6}


class Stories(Facet):
    async def create_script(self, owner: str, project_id: str, draft: ScriptDraft) -> Script:
        await self._project(owner, project_id, active=True)
        ts = now_ms()
        script = Script(
            project_id=project_id,
            script_id=new_script_id(),
            title=draft.title,
            raw_text=draft.raw_text,
            form=draft.form,
            created_at_ts=ts,
            updated_at_ts=ts,
        )
        await self.store.put_script(script)
        await self._story_event(
            project_id, "script.created", owner, {"script_id": script.script_id}
        )
        return script

    async def get_script(self, owner: str, project_id: str, script_id: str) -> Script:
        await self._project(owner, project_id)
        found = await self.store.get_script(project_id, script_id)
        if found is None:
            raise no_script(project_id, script_id)
        return found

    async def compile_script(
        self, owner: str, project_id: str, script_id: str
    ) -> tuple[Script, list[Scene]]:
        """Compile against the project's assets now: ``CompileRejected`` (422, every problem)
        writes nothing; otherwise the scenes (each kept at its place on the timeline when it
        was compiled before) and the script with its graph hash."""
        script = await self.get_script(owner, project_id, script_id)
        await self._project(owner, project_id, active=True)
        directory = AssetTable(await self.asset_directory(project_id))
        graph = compile_script(project_id, script.raw_text, directory, script.form)
        ids = [scene_id_of(script_id, i) for i in range(len(graph.scenes))]
        nodes = [
            s.model_copy(update={"scene_id": sid}) for s, sid in zip(graph.scenes, ids, strict=True)
        ]
        graph = graph.model_copy(update={"scenes": nodes})
        before = {s.scene_id: s for s in await self.store.project_scenes(project_id)}
        last = max((s.position for s in before.values()), default=-1)
        ts = now_ms()
        scenes = []
        for node in nodes:
            old = before.get(node.scene_id)
            last = last if old else last + 1
            scene = Scene(
                project_id=project_id,
                scene_id=node.scene_id,
                script_id=script_id,
                position=old.position if old else last,
                graph=node,
                created_at_ts=old.created_at_ts if old else ts,
                updated_at_ts=max(ts, old.updated_at_ts + 1) if old else ts,
            )
            await self.store.put_scene(scene)
            scenes.append(scene)
        compiled = script.model_copy(
            update={
                "form": graph.form,
                "status": "compiled",
                "graph_hash": graph.graph_hash,
                "compiler_version": graph.compiler_version,
                "scene_ids": ids,
                "updated_at_ts": max(ts, script.updated_at_ts + 1),
            }
        )
        await self.store.put_script(compiled)
        payload = {"script_id": script_id, "graph_hash": graph.graph_hash, "scenes": ids}
        await self._story_event(project_id, "script.compiled", owner, payload)
        return compiled, scenes

    async def get_scene(self, owner: str, project_id: str, scene_id: str) -> Scene:
        await self._project(owner, project_id)
        found = await self.store.get_scene(project_id, scene_id)
        if found is None:
            raise no_scene(project_id, scene_id)
        return found

    async def scene_assets(
        self, owner: str, project_id: str, scene_id: str
    ) -> tuple[Scene, dict[str, PinnedAsset], ProjectStyle]:
        """The scene, each of its pins that is a locked version the project holds (what
        composition reads), and the project's style words."""
        project = await self._project(owner, project_id)
        scene = await self.get_scene(owner, project_id, scene_id)
        registry: dict[str, PinnedAsset] = {}
        for pin in scene.graph.assets:
            if pin.pin is None or pin.version is None:
                continue
            version = await self.store.get_asset_version(project_id, pin.asset_id, pin.version)
            if version is None or not version.is_locked:
                continue
            reference = next(
                (version.images[r] for r in version.roles if r in version.images), None
            )
            registry[pin.pin] = PinnedAsset(
                pin=pin.pin,
                asset_type=pin.asset_type,
                canonical_prompt=version.canonical_prompt,
                negative_prompt=version.negative_prompt,
                reference=reference,
                strength=STRENGTH.get(pin.asset_type, 0.5),
            )
        return scene, registry, style_of(project)

    async def validate_scene(
        self, owner: str, project_id: str, scene_id: str
    ) -> tuple[Scene, list[Blocker]]:
        """The scene and everything that would stop it rendering now: an asset without a
        locked version, a pinned version unlocked (or gone) since the compile."""
        scene, registry, _ = await self.scene_assets(owner, project_id, scene_id)
        return scene, blockers(scene.graph, registry)

    async def asset_directory(self, project_id: str) -> list[DirectoryEntry]:
        """The project's assets as the compiler looks them up (names, aliases, locks)."""
        entries = []
        for asset_id, _, _ in await self.store.project_asset_labels(project_id):
            asset = await self.store.get_asset(project_id, asset_id)
            versions = await self.store.asset_versions(project_id, asset_id)
            if asset is None or not versions:
                continue
            aliases = versions[-1].metadata.get("aliases", [])
            locked = [v.version for v in versions if v.is_locked]
            entries.append(
                DirectoryEntry(
                    asset_id=asset_id,
                    asset_type=asset.asset_type,
                    name=asset.name,
                    aliases=tuple(a for a in aliases if isinstance(a, str)),
                    locked_version=max(locked) if locked else None,
                )
            )
        return entries

    async def _project(self, owner: str, project_id: str, active: bool = False) -> Project:
        project = await self.store.get_project(owner, project_id)
        if project is None:
            raise no_project(project_id)
        if active and project.status != "active":
            raise ProjectArchived(f"status: project {project_id!r} is archived: PATCH it active")
        return project

    async def _story_event(
        self, project_id: str, kind: str, who: str, payload: dict[str, Any]
    ) -> None:
        await append_event(self.store, project_id, kind, who, payload)


def style_of(project: Project) -> ProjectStyle:
    """What composition takes of the project: its anchor prompt and its negatives."""
    return ProjectStyle(
        project_id=project.project_id,
        style_anchor_prompt=", ".join([project.style_anchor_prompt, *project.style.style_tags]),
        negative_prompt=", ".join(project.style.negatives),
    )
