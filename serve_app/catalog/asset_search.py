"""The asset search facet: a project's assets by type, tags and text, ranked by the cosine of
each asset's latest canonical prompt (its Embedder vector, kept with the version) to the
query's. The project's rows are its namespace: only primary-key prefixes of that project are
read, so no search can return another project's asset."""

from __future__ import annotations

import numpy as np

from serve_app.catalog.facet import Facet
from serve_app.projects.models import Asset, AssetVersion, no_project

Hit = tuple[Asset, AssetVersion, float | None]


class AssetSearch(Facet):
    async def search_assets(
        self,
        owner: str,
        project_id: str,
        query: list[float] | None,
        asset_type: str | None,
        tags: list[str],
        offset: int,
        limit: int,
    ) -> list[Hit]:
        """The project's assets of ``asset_type`` with every tag of ``tags``, each with its
        latest version: ranked by the cosine of its canonical prompt to ``query`` (highest
        first, ties by id) when a query is given, by id otherwise; a page from ``offset``.
        Only this project's rows are read (primary-key prefixes)."""
        if await self.store.get_project(owner, project_id) is None:
            raise no_project(project_id)
        wanted = set(tags)
        assets = {
            a.asset_id: a
            for a in await self.store.project_assets(project_id)
            if (asset_type is None or a.asset_type == asset_type) and wanted <= set(a.tags)
        }
        latest: dict[str, tuple[int, bytes]] = {}
        for asset_id, number, embed in await self.store.project_embeddings(project_id):
            if asset_id in assets and number >= latest.get(asset_id, (0, b""))[0]:
                latest[asset_id] = (number, embed)
        scores: dict[str, float | None] = dict.fromkeys(assets)
        if query is not None and latest:
            ids = sorted(latest)
            matrix = np.stack([np.frombuffer(latest[i][1], dtype=np.float32) for i in ids])
            q = np.asarray(query, dtype=np.float32)
            cosines = matrix @ q / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(q) + 1e-12)
            scores.update(zip(ids, (float(c) for c in cosines), strict=True))
        ranked = sorted(
            assets, key=lambda i: (-(scores[i] or -2.0) if query is not None else 0.0, i)
        )
        hits: list[Hit] = []
        for asset_id in ranked[offset : offset + limit]:
            versions = await self.store.asset_versions(project_id, asset_id)
            hits.append((assets[asset_id], versions[-1], scores[asset_id]))
        return hits
