"""A soul's look: its style profile (last write wins) and its reference images."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from serve_app.diffusion.sources import ModelManager, parse_lora
from serve_app.errors import NotFound, UnknownSoul
from serve_app.ids import new_ulid
from serve_app.references import fetch_reference, reference_key, reference_prefix
from serve_app.schemas import StyleProfile
from serve_app.settings import Settings
from serve_app.storage.objects import ObjectStore


class NoStyleProfile(NotFound):
    def __init__(self, soul_id: str) -> None:
        super().__init__(f"no style profile for soul {soul_id!r}")


class StoredReference(BaseModel):
    """What an ingested reference image became, as kept for an Idempotency-Key replay."""

    storage_key: str
    width: int
    height: int
    bytes: int = Field(description="Size of the stored PNG.")


class Looks:
    def __init__(
        self, catalog: Any, objects: ObjectStore, models: ModelManager, settings: Settings
    ) -> None:
        self.catalog, self.objects, self.models, self.settings = catalog, objects, models, settings

    async def put_style(self, style: StyleProfile) -> StyleProfile:
        """Upsert, once the soul is known (before any outbound call) and its CivitAI refs are
        known to exist and be safetensors."""
        await self.require_soul(style.soul_id)
        await asyncio.to_thread(self._check_model_refs, style)
        stored: StyleProfile | None = await self.catalog.put_style.remote(style)
        if stored is None:
            raise UnknownSoul(style.soul_id)
        return stored

    async def get_style(self, soul_id: str) -> StyleProfile:
        style: StyleProfile | None = await self.catalog.get_style.remote(soul_id)
        if style is None:
            raise NoStyleProfile(soul_id)
        return style

    async def list_styles(self) -> list[StyleProfile]:
        styles: list[StyleProfile] = await self.catalog.list_styles.remote()
        return styles

    async def delete_style(self, soul_id: str) -> None:
        if not await self.catalog.delete_style.remote(soul_id):
            raise NoStyleProfile(soul_id)

    async def ingest_reference(self, soul_id: str, url: str) -> StoredReference:
        """Fetch an image, verify it and store it as a plain RGB PNG."""
        await self.require_soul(soul_id)
        image = await asyncio.to_thread(fetch_reference, url, self.settings)
        key = reference_key(soul_id, new_ulid())
        await asyncio.to_thread(self.objects.put, key, image.png)
        return StoredReference(
            storage_key=key, width=image.width, height=image.height, bytes=len(image.png)
        )

    async def reference_keys(self, soul_id: str) -> list[str]:
        """A soul's reference images, oldest first."""
        await self.require_soul(soul_id)
        return await asyncio.to_thread(self.objects.list, reference_prefix(soul_id))

    async def require_soul(self, soul_id: str) -> None:
        if await self.catalog.get_soul.remote(soul_id) is None:
            raise UnknownSoul(soul_id)

    def _check_model_refs(self, style: StyleProfile) -> None:
        for ref in [style.base_model_ref, *(parse_lora(e)[0] for e in style.lora_ids)]:
            self.models.check_remote(ref)
