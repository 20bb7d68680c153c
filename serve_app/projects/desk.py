"""The project routes' logic that is more than one Catalog call: an asset made or changed with
its canonical prompt's embedding, then its images queued as an ``asset_generate`` job; a
search with its text embedded. Every call names the caller's API client (``owner``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.jobs.desk import JobDesk
from serve_app.jobs.kinds.asset_generate import AssetGenerateJob, default_roles
from serve_app.projects.models import Asset, AssetChanges, AssetSpec, AssetVersion, prompt_of
from serve_app.projects.queries import AssetQuery


@dataclass(frozen=True)
class ProjectDesk:
    catalog: Any
    embedder: Any
    jobs: JobDesk

    async def embed(self, text: str) -> list[float]:
        vector: list[float] = await self.embedder.embed.remote(text)
        return vector

    async def _embedding(self, text: str | None) -> bytes | None:
        if not text:
            return None
        return np.asarray(await self.embed(text), dtype=np.float32).tobytes()

    async def search(self, owner: str, project_id: str, query: AssetQuery) -> list[Any]:
        """``assets:search``: the catalog's hits for an ``AssetQuery``, its text embedded."""
        vector = await self.embed(query.text) if query.text else None
        hits: list[Any] = await self.catalog.search_assets.remote(
            owner,
            project_id,
            vector,
            query.asset_type,
            query.tags,
            query.offset,
            query.limit,
            query.taxonomy,
        )
        return hits

    async def generate(self, owner: str, project_id: str, spec: AssetSpec) -> dict[str, Any]:
        """A new asset, its version 1, and the job rendering its images."""
        await self.catalog.get_project.remote(owner, project_id)  # 404 before any work
        ticket = await self.jobs.admit(owner)  # 429 before the asset is written
        try:
            embed = await self._embedding(prompt_of(spec))
            made: tuple[Asset, AssetVersion] = await self.catalog.create_asset.remote(
                owner, project_id, spec, default_roles(spec.asset_type), embed
            )
        except BaseException:
            await self.jobs.release(owner, ticket)
            raise
        return await self._queued(owner, *made, ticket)

    async def new_version(
        self, owner: str, project_id: str, asset_id: str, changes: AssetChanges
    ) -> dict[str, Any]:
        """The asset's next version (from its latest) with ``changes``, and its images' job."""
        asset, _ = await self.catalog.get_asset.remote(owner, project_id, asset_id)
        ticket = await self.jobs.admit(owner)  # 429 before the version is written
        try:
            embed = await self._embedding(prompt_of(changes))
            made: AssetVersion = await self.catalog.new_asset_version.remote(
                owner, project_id, asset_id, changes, embed
            )
        except BaseException:
            await self.jobs.release(owner, ticket)
            raise
        return await self._queued(owner, asset, made, ticket)

    async def _queued(
        self, owner: str, asset: Asset, version: AssetVersion, ticket: str
    ) -> dict[str, Any]:
        spec = AssetGenerateJob(
            soul_id=asset.project_id,
            asset_id=asset.asset_id,
            asset_type=asset.asset_type,
            version=version.version,
            roles=version.roles,
        )
        accepted = await self.jobs.submit(owner, spec, ticket)
        return {
            "asset_id": asset.asset_id,
            "version": version.version,
            "job": accepted.model_dump(mode="json"),
        }
