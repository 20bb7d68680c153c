"""The projects facet: a client's projects, their assets' versions, search inside one project,
and each project's event log.

Every method takes the caller's ``owner`` (its API key's id) and the ``project_id``, and reads
the project first under that owner: another client's project is ``ProjectNotFound`` (404), so
nothing past that read can reach it. Every change appends an event to the project's log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ulid import ULID

from serve_app.catalog.facet import Facet
from serve_app.catalog.scene_pins import AssetPinned, scenes_pinning
from serve_app.errors import Busy
from serve_app.ids import now_ms
from serve_app.projects.characters import check_character, pin_at_lock
from serve_app.projects.models import (
    Asset,
    AssetChanges,
    AssetLocked,
    AssetNotLocked,
    AssetSpec,
    AssetVersion,
    Project,
    ProjectArchived,
    ProjectDraft,
    ProjectEvent,
    ProjectPatch,
    first_version,
    new_asset_id,
    new_project_id,
    next_version,
    no_asset,
    no_project,
)
from serve_app.storage.tables import CatalogStore

ATTEMPTS = 8  # concurrent writers of one asset's versions, before the client is told to retry
_last_seq = [0]


def next_seq() -> str:
    """A ULID above every one this replica made before (in one millisecond: the last one + 1),
    so a project's events sort in the order they were logged."""
    value = max(int(ULID()), _last_seq[0] + 1)
    _last_seq[0] = value
    return str(ULID.from_int(value))


async def append_event(
    store: CatalogStore, project_id: str, kind: str, who: str, payload: dict[str, Any]
) -> None:
    """Append an event to the project's log (the one way every facet writes it)."""
    event = ProjectEvent(
        project_id=project_id, seq=next_seq(), kind=kind, who=who, at_ts=now_ms(), payload=payload
    )
    await store.append_event(event)


class Projects(Facet):
    async def create_project(self, owner: str, draft: ProjectDraft) -> Project:
        ts = now_ms()
        project = Project(
            **draft.model_dump(),
            project_id=new_project_id(),
            owner=owner,
            created_at_ts=ts,
            updated_at_ts=ts,
        )
        await self.store.put_project(project)
        await self._log_event(project.project_id, "project.created", owner, {"name": project.name})
        return project

    async def get_project(self, owner: str, project_id: str) -> Project:
        found = await self.store.get_project(owner, project_id)
        if found is None:
            raise no_project(project_id)
        return found

    async def list_projects(self, owner: str, after: str, limit: int) -> list[Project]:
        return await self.store.projects_page(owner, after, limit)

    async def patch_project(self, owner: str, project_id: str, patch: ProjectPatch) -> Project:
        current = await self.get_project(owner, project_id)
        changes = {k: getattr(patch, k) for k in patch.model_fields_set}
        changes = {k: v for k, v in changes.items() if v is not None}
        changed = current.model_copy(
            update={**changes, "updated_at_ts": max(now_ms(), current.updated_at_ts + 1)}
        )
        await self.store.put_project(changed)
        await self._log_event(project_id, "project.updated", owner, {"fields": sorted(changes)})
        return changed

    async def create_asset(
        self, owner: str, project_id: str, spec: AssetSpec, roles: list[str], embed: bytes | None
    ) -> tuple[Asset, AssetVersion]:
        """A new asset and its version 1 (unlocked, no images yet); ``roles``: the asset
        type's, used when the spec names none; ``embed``: its canonical prompt's embedding."""
        project = await self._active_project(owner, project_id)
        await check_character(self.store, spec.asset_type, spec.soul_id, spec.identity_version)
        ts = now_ms()
        asset = Asset(
            project_id=project_id,
            asset_id=new_asset_id(),
            asset_type=spec.asset_type,
            name=spec.name,
            tags=spec.tags,
            created_at_ts=ts,
        )
        version = first_version(project, asset.asset_id, spec, roles, owner).model_copy(
            update={"created_at_ts": ts, "updated_at_ts": ts}
        )
        await self.store.insert_asset(asset)
        await self.store.insert_asset_version(version, embed)
        await self._log_event(
            project_id,
            "asset.created",
            owner,
            {"asset_id": asset.asset_id, "asset_type": asset.asset_type, "name": asset.name},
        )
        return asset, version

    async def get_asset(
        self, owner: str, project_id: str, asset_id: str
    ) -> tuple[Asset, list[AssetVersion]]:
        """The asset and its versions, oldest first (each names its parent: the lineage)."""
        await self.get_project(owner, project_id)
        asset = await self.store.get_asset(project_id, asset_id)
        if asset is None:
            raise no_asset(project_id, asset_id)
        return asset, await self.store.asset_versions(project_id, asset_id)

    async def get_asset_version(
        self, owner: str, project_id: str, asset_id: str, version: int | None = None
    ) -> AssetVersion:
        """``version``, or the latest one."""
        _, versions = await self.get_asset(owner, project_id, asset_id)
        found = next((v for v in versions if v.version == version), None) if version else None
        if version is None and versions:
            found = versions[-1]
        if found is None:
            raise no_asset(project_id, asset_id, version)
        return found

    async def new_asset_version(
        self,
        owner: str,
        project_id: str,
        asset_id: str,
        changes: AssetChanges,
        embed: bytes | None,
    ) -> AssetVersion:
        """The next version: the latest one copied with ``changes``, unlocked, without images,
        the latest one its parent. ``embed``: the new canonical prompt's embedding (None: the
        parent's prompt is kept, and so is its embedding)."""
        await self._active_project(owner, project_id)
        for _ in range(ATTEMPTS):
            asset, versions = await self.get_asset(owner, project_id, asset_id)
            current = versions[-1]
            if changes.soul_id is not None or changes.identity_version is not None:
                soul_id = changes.soul_id if changes.soul_id is not None else current.soul_id
                await check_character(
                    self.store, asset.asset_type, soul_id, changes.identity_version
                )
            kept = embed
            if kept is None:
                kept = await self.store.asset_embedding(project_id, asset_id, current.version)
            ts = now_ms()
            made = next_version(current, current.version + 1, changes, owner).model_copy(
                update={"created_at_ts": ts, "updated_at_ts": ts}
            )
            if await self.store.insert_asset_version(made, kept):
                payload = {
                    "asset_id": asset_id,
                    "version": made.version,
                    "parent": made.parent,
                    "change_note": made.change_note,
                }
                await self._log_event(project_id, "version.created", owner, payload)
                return made
        raise Busy(f"asset {asset_id!r}: too many concurrent new versions; retry")

    async def lock_asset(
        self, owner: str, project_id: str, asset_id: str, version: int | None
    ) -> AssetVersion:
        """Lock ``version`` (the latest when None): from then on it never changes. A character
        of a soul pins the soul's locked identity version as it does (``projects/characters``)."""
        current = await self.get_asset_version(owner, project_id, asset_id, version)
        pinned = None if current.is_locked else await pin_at_lock(self.store, current)

        def lock(v: AssetVersion) -> AssetVersion:
            if v.is_locked:
                raise AssetLocked(f"version: {v.version} of asset {asset_id!r} is locked already")
            if v.soul_id is None:
                return v.model_copy(update={"is_locked": True})
            return v.model_copy(update={"is_locked": True, "identity_version": pinned})

        anchor = {} if pinned is None else {"soul_id": current.soul_id, "identity_version": pinned}
        return await self._change_version(
            owner, project_id, asset_id, current.version, lock, "version.locked", payload=anchor
        )

    async def unlock_asset(
        self, owner: str, project_id: str, asset_id: str, version: int | None
    ) -> AssetVersion:
        """Unlock a locked version, where the project's policy allows it and no current scene
        pins it (``catalog/scene_pins``: 409 naming the scenes, nothing written)."""
        project = await self.get_project(owner, project_id)
        current = await self.get_asset_version(owner, project_id, asset_id, version)
        if current.is_locked and project.policy.allow_unlock:
            pinning = await scenes_pinning(self.store, project_id, asset_id, current.version)
            if pinning:
                raise AssetPinned(asset_id, current.version, pinning)

        def unlock(v: AssetVersion) -> AssetVersion:
            if not v.is_locked:
                raise AssetNotLocked(f"version: {v.version} of asset {asset_id!r} is not locked")
            if not project.policy.allow_unlock:
                raise AssetLocked(f"policy.allow_unlock: project {project_id!r} forbids unlocking")
            return v.model_copy(update={"is_locked": False})

        return await self._change_version(
            owner, project_id, asset_id, current.version, unlock, "version.unlocked", unlocking=True
        )

    async def add_asset_image(
        self,
        owner: str,
        project_id: str,
        asset_id: str,
        version: int,
        role: str,
        key: str,
        generation: dict[str, Any],
    ) -> AssetVersion:
        """Record a rendered image (object ``key``) of an unlocked version under ``role``, and
        the generation (its prompt and seed) in the project's log."""

        def add(v: AssetVersion) -> AssetVersion:
            if v.is_locked:
                raise AssetLocked(f"version: {version} of asset {asset_id!r} is locked")
            return v.model_copy(update={"images": {**v.images, role: key}})

        return await self._change_version(
            owner, project_id, asset_id, version, add, "asset.generated", payload=generation
        )

    async def project_events(
        self, owner: str, project_id: str, after: str, limit: int
    ) -> list[ProjectEvent]:
        await self.get_project(owner, project_id)
        return await self.store.events_page(project_id, after, limit)

    async def _active_project(self, owner: str, project_id: str) -> Project:
        project = await self.get_project(owner, project_id)
        if project.status != "active":
            raise ProjectArchived(f"status: project {project_id!r} is archived: PATCH it active")
        return project

    async def _change_version(
        self,
        owner: str,
        project_id: str,
        asset_id: str,
        version: int | None,
        change: Callable[[AssetVersion], AssetVersion],
        kind: str,
        unlocking: bool = False,
        payload: dict[str, Any] | None = None,
    ) -> AssetVersion:
        for _ in range(ATTEMPTS):
            current = await self.get_asset_version(owner, project_id, asset_id, version)
            ts = max(now_ms(), current.updated_at_ts + 1)
            changed = change(current).model_copy(update={"updated_at_ts": ts})
            if await self.store.update_asset_version(changed, current.updated_at_ts, unlocking):
                logged = {"asset_id": asset_id, "version": current.version, **(payload or {})}
                await self._log_event(project_id, kind, owner, logged)
                return changed
        raise Busy(f"version {version} of asset {asset_id!r} is busy; retry")

    async def _log_event(
        self, project_id: str, kind: str, who: str, payload: dict[str, Any]
    ) -> None:
        await append_event(self.store, project_id, kind, who, payload)
