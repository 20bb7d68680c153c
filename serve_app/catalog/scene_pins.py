"""What a project's scenes pin now, read by the timeline and by unlocking an asset version.

current   the scenes of each script's last compile (``script.scene_ids``): a recompile that made
          fewer scenes left the rest behind, and a recompile that no longer names an asset no
          longer pins it
pinning   the current scenes that pin ``asset_id@vN``; unlocking that version is refused while
          there is one (``AssetPinned``, 409 naming them), before anything is written

Order with a concurrent compile: the unlock reads the pins, then writes the version; a compile
resolves names to *locked* versions only. A compile that read the version still locked and
writes its scenes after the unlock leaves a scene pinning an unlocked version: that scene
cannot render (the render plan refuses an unlocked pin with a 409 naming it, and
``:validate`` reports it) until the version is locked again or the script is recompiled.
"""

from __future__ import annotations

from serve_app.projects.models import AssetLocked
from serve_app.storage.tables import CatalogStore
from serve_app.stories.records import Scene


class AssetPinned(AssetLocked):
    """An asset version that scenes pin cannot be unlocked (409)."""

    def __init__(self, asset_id: str, version: int, scene_ids: list[str]) -> None:
        super().__init__(
            f"version: {version} of asset {asset_id!r} is pinned by scenes "
            f"{', '.join(scene_ids)}: recompile their scripts without it first"
        )
        self.errors = [
            {"type": "pinned", "loc": ["scenes", scene_id], "msg": f"pins {asset_id}@v{version}"}
            for scene_id in scene_ids
        ]


async def current_scenes(store: CatalogStore, project_id: str) -> list[Scene]:
    """The scenes of each script's last compile."""
    scenes = await store.project_scenes(project_id)
    current: set[str] = set()
    for script_id in {s.script_id for s in scenes}:
        script = await store.get_script(project_id, script_id)
        current.update(script.scene_ids if script else [])
    return [s for s in scenes if s.scene_id in current]


async def scenes_pinning(
    store: CatalogStore, project_id: str, asset_id: str, version: int
) -> list[str]:
    """The ids of the current scenes that pin ``asset_id`` at ``version``, sorted."""
    return sorted(
        scene.scene_id
        for scene in await current_scenes(store, project_id)
        if any(p.asset_id == asset_id and p.version == version for p in scene.graph.assets)
    )
