"""The asset images facet: the image embedding of each rendered asset image, and a project's
assets ranked by their images' likeness to an uploaded image.

    record   after the ``asset_generate`` job records an image on its version, Dedupe's image
             embedding of that render (its CLIP model's, the one drift checks compare) is kept
             under ``(project_id, asset_id, version, role)`` with the model's name
    drift    a version's embeddings by one model (a primary-key prefix): what the consistency
             gate compares a scene frame with for each environment, nature and prop it pins
    search   an asset's score is the best cosine of the query to the images of its latest
             version that has embeddings by the query's model; assets without one rank last
             (score None); filtered by type, tags and taxonomy and paged as the text search is
    tenancy  every call reads the project under its owner first (another client's project is
             ``ProjectNotFound``), and only that project's primary-key prefix is read
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from serve_app.catalog.asset_search import Hit, chosen_assets, page_of, ranked_by
from serve_app.catalog.facet import Facet
from serve_app.ids import now_ms
from serve_app.projects.models import no_project

EMBED_DTYPE = np.float16  # as Dedupe packs its image embeddings


class AssetImages(Facet):
    async def add_asset_image_embed(
        self,
        owner: str,
        project_id: str,
        asset_id: str,
        version: int,
        role: str,
        model: str,
        embed: bytes,
    ) -> None:
        """Keep the embedding (by ``model``) of the version's image of ``role``."""
        if await self.store.get_project(owner, project_id) is None:
            raise no_project(project_id)
        await self.store.put_asset_image_embed(
            project_id, asset_id, version, role, model, embed, now_ms()
        )

    async def asset_image_embeds(
        self, owner: str, project_id: str, asset_id: str, version: int, model: str
    ) -> list[bytes]:
        """The embeddings by ``model`` of the version's images, by role (what a frame's drift
        from the asset is judged against)."""
        if await self.store.get_project(owner, project_id) is None:
            raise no_project(project_id)
        rows = await self.store.version_image_embeds(project_id, asset_id, version)
        return [embed for _, made_by, embed in rows if made_by == model]

    async def search_assets_by_image(
        self,
        owner: str,
        project_id: str,
        query: bytes,
        model: str,
        asset_type: str | None,
        tags: list[str],
        offset: int,
        limit: int,
        taxonomy: Mapping[str, str] | None = None,
    ) -> list[Hit]:
        """The project's assets of ``asset_type`` with every tag of ``tags`` and every entry
        of ``taxonomy`` (in their latest version), ranked by the best cosine of ``query`` (an
        image embedding by ``model``) to their latest embedded version's images, highest first
        (ties by id); a page from ``offset``."""
        chosen = await chosen_assets(self.store, owner, project_id, asset_type, tags, taxonomy)
        scores: dict[str, float | None] = dict.fromkeys(chosen)
        latest: dict[str, tuple[int, list[bytes]]] = {}
        for asset_id, number, _, made_by, embed in await self.store.project_image_embeds(
            project_id
        ):
            if asset_id not in scores or made_by != model:
                continue
            seen, embeds = latest.get(asset_id, (0, []))
            if number > seen:
                latest[asset_id] = (number, [embed])
            elif number == seen:
                embeds.append(embed)
        q = _unit(np.frombuffer(query, dtype=EMBED_DTYPE))
        for asset_id, (_, embeds) in latest.items():
            matrix = np.frombuffer(b"".join(embeds), dtype=EMBED_DTYPE).reshape(len(embeds), -1)
            if matrix.shape[1] == q.shape[0]:
                scores[asset_id] = float(np.max(_rows_unit(matrix) @ q))
        return await page_of(
            self.store, project_id, ranked_by(chosen, scores), scores, offset, limit
        )


def _unit(v: np.ndarray) -> np.ndarray:
    v = v.astype(np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def _rows_unit(m: np.ndarray) -> np.ndarray:
    m = m.astype(np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)
