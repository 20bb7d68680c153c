"""The image embedding of each rendered asset image (``asset_image_embed``), keyed
``(project_id, asset_id, version, role)``: a project's embeddings are a primary-key prefix (the
project's image-vector namespace), with the model that made each, so only embeddings of one
model are ever compared. A row is written after its image is recorded on the version; a retry
writes the same row again (upsert)."""

from __future__ import annotations

from serve_app.storage.store import Store, TableDDL, insert_sql

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS asset_image_embed (
  project_id TEXT NOT NULL, asset_id TEXT NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL,
  embed_model TEXT NOT NULL, image_embed BLOB NOT NULL, created_at_ts INTEGER NOT NULL,
  PRIMARY KEY (project_id, asset_id, version, role));
""",
    postgres="""
CREATE TABLE IF NOT EXISTS asset_image_embed (
  project_id TEXT COLLATE "C" NOT NULL, asset_id TEXT COLLATE "C" NOT NULL,
  version INTEGER NOT NULL, role TEXT COLLATE "C" NOT NULL, embed_model TEXT NOT NULL,
  image_embed BYTEA NOT NULL, created_at_ts BIGINT NOT NULL,
  PRIMARY KEY (project_id, asset_id, version, role));
""",
)

_COLUMNS = [
    "project_id",
    "asset_id",
    "version",
    "role",
    "embed_model",
    "image_embed",
    "created_at_ts",
]
_UPSERT = insert_sql(
    "asset_image_embed",
    _COLUMNS,
    "ON CONFLICT (project_id, asset_id, version, role) DO UPDATE SET "
    "embed_model = excluded.embed_model, image_embed = excluded.image_embed",
)

ImageEmbed = tuple[str, int, str, str, bytes]  # asset_id, version, role, model, embedding


class AssetImageRows(Store):
    ddl = DDL

    async def put_asset_image_embed(
        self,
        project_id: str,
        asset_id: str,
        version: int,
        role: str,
        model: str,
        embed: bytes,
        ts: int,
    ) -> None:
        await self._write(_UPSERT, (project_id, asset_id, version, role, model, embed, ts))

    async def project_image_embeds(self, project_id: str) -> list[ImageEmbed]:
        """Every image embedding of the project: a primary-key prefix."""
        rows = await self._rows(
            "SELECT asset_id, version, role, embed_model, image_embed FROM asset_image_embed "
            "WHERE project_id = ?",
            (project_id,),
        )
        return [
            (r["asset_id"], r["version"], r["role"], r["embed_model"], bytes(r["image_embed"]))
            for r in rows
        ]

    async def version_image_embeds(
        self, project_id: str, asset_id: str, version: int
    ) -> list[tuple[str, str, bytes]]:
        """The embeddings of one asset version's images (role, model, embedding): a
        primary-key prefix."""
        rows = await self._rows(
            "SELECT role, embed_model, image_embed FROM asset_image_embed "
            "WHERE project_id = ? AND asset_id = ? AND version = ? ORDER BY role",
            (project_id, asset_id, version),
        )
        return [(r["role"], r["embed_model"], bytes(r["image_embed"])) for r in rows]
