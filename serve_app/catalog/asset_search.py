"""The asset search facet: a project's assets by type, tags, taxonomy and text, ranked by
the cosine of each asset's latest canonical prompt (its Embedder vector, kept with the version)
to the query's; a taxonomy filter matches the latest version's taxonomy exactly. The
project's rows are its namespace: only primary-key prefixes of that project are read, so no
search can return another project's asset."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np

from serve_app.catalog.facet import Facet
from serve_app.projects.models import Asset, AssetVersion, no_project
from serve_app.projects.taxonomy import matches
from serve_app.storage.tables import CatalogStore

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
        taxonomy: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        """The project's assets of ``asset_type`` with every tag of ``tags`` whose latest
        version has every entry of ``taxonomy``, each with that version: ranked by the cosine
        of its canonical prompt to ``query`` (highest first, ties by id) when a query is given,
        by id otherwise; a page from ``offset``. Only this project's rows are read
        (primary-key prefixes)."""
        chosen = await chosen_assets(self.store, owner, project_id, asset_type, tags, taxonomy)
        scores: dict[str, float | None] = dict.fromkeys(chosen)
        if query is not None:
            latest: dict[str, tuple[int, bytes]] = {}
            for asset_id, number, embed in await self.store.project_embeddings(project_id):
                if asset_id in scores and number >= latest.get(asset_id, (0, b""))[0]:
                    latest[asset_id] = (number, embed)
            scores.update(_cosines(latest, query))
        ranked = ranked_by(chosen, scores) if query else chosen
        return await page_of(self.store, project_id, ranked, scores, offset, limit)


async def chosen_assets(
    store: CatalogStore,
    owner: str,
    project_id: str,
    asset_type: str | None,
    tags: list[str],
    taxonomy: Mapping[str, str] | None = None,
) -> list[str]:
    """The ids of the owner's project's assets of ``asset_type`` with every tag of ``tags``
    and, in their latest version, every entry of ``taxonomy``, by id (``ProjectNotFound`` for
    a project that is not the owner's)."""
    if await store.get_project(owner, project_id) is None:
        raise no_project(project_id)
    wanted = set(tags)
    chosen = [
        asset_id
        for asset_id, kind, tags_json in await store.project_asset_labels(project_id)
        if (asset_type is None or kind == asset_type)
        and (not wanted or wanted <= set(json.loads(tags_json)))
    ]
    if not taxonomy:
        return chosen
    latest: dict[str, tuple[int, str]] = {}
    for asset_id, number, taxonomy_json in await store.project_taxonomies(project_id):
        if number > latest.get(asset_id, (0, ""))[0]:
            latest[asset_id] = (number, taxonomy_json)
    return [
        asset_id
        for asset_id in chosen
        if asset_id in latest and matches(json.loads(latest[asset_id][1]), taxonomy)
    ]


def ranked_by(chosen: list[str], scores: dict[str, float | None]) -> list[str]:
    """Highest score first, ties (and the unscored, last) by id."""
    return sorted(chosen, key=lambda i: (-_or_least(scores[i]), i))


async def page_of(
    store: CatalogStore,
    project_id: str,
    ranked: list[str],
    scores: dict[str, float | None],
    offset: int,
    limit: int,
) -> list[Hit]:
    """The page from ``offset`` of the ranked assets, each with its latest version."""
    hits: list[Hit] = []
    for asset_id in ranked[offset : offset + limit]:
        asset = await store.get_asset(project_id, asset_id)
        versions = await store.asset_versions(project_id, asset_id)
        if asset is not None and versions:
            hits.append((asset, versions[-1], scores[asset_id]))
    return hits


def _or_least(score: float | None) -> float:
    return score if score is not None else -2.0


def _cosines(latest: dict[str, tuple[int, bytes]], query: list[float]) -> dict[str, float]:
    """Each asset's cosine of its latest embedding to the query."""
    if not latest:
        return {}
    ids = list(latest)
    matrix = np.frombuffer(b"".join(latest[i][1] for i in ids), dtype=np.float32)
    matrix = matrix.reshape(len(ids), -1)
    q = np.asarray(query, dtype=np.float32)
    cosines = matrix @ q / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(q) + 1e-12)
    return dict(zip(ids, cosines.tolist(), strict=True))
