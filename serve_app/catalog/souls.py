"""The souls facet: souls and their style profiles; souls shipped as data (config/souls.yaml)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from serve_app.catalog.facet import Facet
from serve_app.ids import now_ms
from serve_app.schemas import Soul, SoulSpec, StyleProfile
from serve_app.settings import config_file


class SoulsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    souls: list[SoulSpec]


def load_souls(path: str | Path) -> list[SoulSpec]:
    return SoulsFile.model_validate(yaml.safe_load(config_file(path).read_text())).souls


class SoulStyles(Facet):
    """Souls, and their style profiles (last write wins)."""

    async def seed_souls(self, souls: list[SoulSpec]) -> None:
        """Seed souls idempotently: styles only where none exists yet."""
        ts = now_ms()
        for spec in souls:
            await self.store.upsert_soul(
                Soul(soul_id=spec.soul_id, display_name=spec.display_name), ts
            )
            await self.store.insert_style_if_absent(
                spec.style.model_copy(update={"updated_at_ts": 1})
            )

    async def get_soul(self, soul_id: str) -> Soul | None:
        return await self.store.get_soul(soul_id)

    async def get_style(self, soul_id: str) -> StyleProfile | None:
        return await self.store.get_style(soul_id)

    async def list_styles(self) -> list[StyleProfile]:
        return await self.store.list_styles()

    async def put_style(self, style: StyleProfile) -> StyleProfile | None:
        """Upsert; returns the profile that stands afterwards, or None for an unknown soul."""
        if await self.store.get_soul(style.soul_id) is None:
            return None
        await self.store.upsert_style(style.model_copy(update={"updated_at_ts": now_ms()}))
        return await self.store.get_style(style.soul_id)

    async def delete_style(self, soul_id: str) -> bool:
        return await self.store.delete_style(soul_id, now_ms())
