"""Images derived from an asset version's images (``asset_derived_image``, keyed
``(project_id, asset_id, version, role)``): a project's derived images, an asset's and a
version's are primary-key prefixes. One row a role: a repeat writes the same row (upsert)."""

from __future__ import annotations

from serve_app.projects.derived import DerivedImage
from serve_app.storage.store import Row, Store, TableDDL, insert_sql

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS asset_derived_image (
  project_id TEXT NOT NULL, asset_id TEXT NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL,
  storage_key TEXT NOT NULL, thumbnail_key TEXT NOT NULL, width INTEGER NOT NULL,
  height INTEGER NOT NULL, label TEXT NOT NULL, dpi INTEGER, job_id TEXT NOT NULL,
  created_at_ts INTEGER NOT NULL, PRIMARY KEY (project_id, asset_id, version, role));
""",
    postgres="""
CREATE TABLE IF NOT EXISTS asset_derived_image (
  project_id TEXT COLLATE "C" NOT NULL, asset_id TEXT COLLATE "C" NOT NULL,
  version INTEGER NOT NULL, role TEXT COLLATE "C" NOT NULL, storage_key TEXT NOT NULL,
  thumbnail_key TEXT NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
  label TEXT NOT NULL, dpi INTEGER, job_id TEXT NOT NULL, created_at_ts BIGINT NOT NULL,
  PRIMARY KEY (project_id, asset_id, version, role));
""",
)

_KEYS = ["project_id", "asset_id", "version", "role"]
_COLUMNS = [
    *_KEYS,
    "storage_key",
    "thumbnail_key",
    "width",
    "height",
    "label",
    "dpi",
    "job_id",
    "created_at_ts",
]
_UPSERT = insert_sql(
    "asset_derived_image",
    _COLUMNS,
    f"ON CONFLICT ({', '.join(_KEYS)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c not in _KEYS),
)


def _derived_from(row: Row) -> DerivedImage:
    return DerivedImage.model_validate({c: row[c] for c in _COLUMNS})


class AssetDerivedRows(Store):
    ddl = DDL

    async def put_derived_image(self, image: DerivedImage) -> None:
        await self._write(_UPSERT, tuple(getattr(image, c) for c in _COLUMNS))

    async def derived_images(
        self, project_id: str, asset_id: str | None = None, version: int | None = None
    ) -> list[DerivedImage]:
        """The project's derived images (an asset's, a version's), by asset, version and role:
        a primary-key prefix."""
        where = "project_id = ?"
        params: list[str | int] = [project_id]
        for column, value in (("asset_id", asset_id), ("version", version)):
            if value is not None:
                where, params = f"{where} AND {column} = ?", [*params, value]
        rows = await self._rows(
            f"SELECT * FROM asset_derived_image WHERE {where} ORDER BY asset_id, version, role",
            params,
        )
        return [_derived_from(r) for r in rows]
