"""The derived images facet: images made from an asset version's images (a character's
portrait, for display and for print), kept as images *of* that version
(``projects/derived.py``).

    add      the project is read under its owner (another client's is ``ProjectNotFound``)
             and the version must exist (``AssetNotFound``); locked or not, its record is
             left as it is (a locked version stays immutable); each image is upserted by
             ``(project_id, asset_id, version, role)``, and the change is logged
             (``version.derived``) only when an image is new or changed: a repeated job that
             writes the same images adds no row and no event
    read     an asset's (or one version's) derived images, a primary-key prefix of the project
"""

from __future__ import annotations

from serve_app.catalog.facet import Facet
from serve_app.catalog.projects import append_event
from serve_app.ids import now_ms
from serve_app.projects.derived import DerivedImage
from serve_app.projects.models import no_asset, no_project


class DerivedImages(Facet):
    async def add_derived_images(
        self, owner: str, project_id: str, asset_id: str, version: int, images: list[DerivedImage]
    ) -> list[DerivedImage]:
        """Keep ``images`` (of ``version`` of ``asset_id``); answers those that were new or
        changed (none for a repeat)."""
        if await self.store.get_project(owner, project_id) is None:
            raise no_project(project_id)
        if await self.store.get_asset_version(project_id, asset_id, version) is None:
            raise no_asset(project_id, asset_id, version)
        kept = {d.role: d for d in await self.store.derived_images(project_id, asset_id, version)}
        ts, written = now_ms(), []
        for image in images:
            if image.role in kept and kept[image.role].same_image(image):
                continue
            image = image.model_copy(update={"created_at_ts": ts})
            await self.store.put_derived_image(image)
            written.append(image)
        if written:
            payload = {
                "asset_id": asset_id,
                "version": version,
                "images": {d.role: d.storage_key for d in written},
                "job_id": written[0].job_id,
            }
            await append_event(self.store, project_id, "version.derived", owner, payload)
        return written

    async def derived_images(
        self, owner: str, project_id: str, asset_id: str, version: int | None = None
    ) -> list[DerivedImage]:
        """The asset's derived images (of ``version`` only, when given), by version and role."""
        if await self.store.get_project(owner, project_id) is None:
            raise no_project(project_id)
        return await self.store.derived_images(project_id, asset_id, version)
