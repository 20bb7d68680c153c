"""Variants (``variant``, keyed ``(pk_id, variant_id)``: a key's variants are a primary-key
prefix), and what they cost: the cost columns of their rows, summed per UTC day.

A deleted variant is a row without objects (a tombstone): never listed, counted or claimed, and
it keeps what it cost (it was spent).
"""

from __future__ import annotations

import json
from typing import Any

from serve_app.schemas import Variant, VariantCost
from serve_app.storage.store import Row, Store, TableDDL, lww_upsert_sql

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS variant (
  pk_id TEXT NOT NULL, variant_id TEXT NOT NULL, soul_id TEXT NOT NULL, asset_url TEXT NOT NULL,
  storage_key TEXT NOT NULL, seed INTEGER, phash INTEGER, image_embed BLOB,
  meta_json TEXT NOT NULL DEFAULT '{}', cost_day TEXT, render_s REAL, animate_s REAL,
  encode_s REAL, cost_usd REAL, updated_at_ts INTEGER NOT NULL, PRIMARY KEY (pk_id, variant_id));
-- DELETE /variants/{variant_id} names a variant by its id alone.
CREATE INDEX IF NOT EXISTS variant_by_id ON variant (variant_id);
""",
    postgres="""
CREATE TABLE IF NOT EXISTS variant (
  pk_id TEXT COLLATE "C" NOT NULL, variant_id TEXT COLLATE "C" NOT NULL, soul_id TEXT NOT NULL,
  asset_url TEXT NOT NULL, storage_key TEXT NOT NULL, seed BIGINT, phash BIGINT,
  meta_json JSONB NOT NULL DEFAULT '{}', updated_at_ts BIGINT NOT NULL,
  PRIMARY KEY (pk_id, variant_id));
ALTER TABLE variant ADD COLUMN IF NOT EXISTS image_embed BYTEA;
ALTER TABLE variant ADD COLUMN IF NOT EXISTS cost_day TEXT COLLATE "C";
ALTER TABLE variant ADD COLUMN IF NOT EXISTS render_s DOUBLE PRECISION;
ALTER TABLE variant ADD COLUMN IF NOT EXISTS animate_s DOUBLE PRECISION;
ALTER TABLE variant ADD COLUMN IF NOT EXISTS encode_s DOUBLE PRECISION;
ALTER TABLE variant ADD COLUMN IF NOT EXISTS cost_usd DOUBLE PRECISION;
-- DELETE /variants/{variant_id} names a variant by its id alone.
CREATE INDEX IF NOT EXISTS variant_by_id ON variant (variant_id);
-- GET /stats/cost and the daily budget sum a day's variants.
CREATE INDEX IF NOT EXISTS variant_by_cost_day ON variant (cost_day);
""",
    sqlite_added=(
        ("variant", "image_embed", "BLOB"),
        *(("variant", c, "REAL") for c in ("render_s", "animate_s", "encode_s", "cost_usd")),
        ("variant", "cost_day", "TEXT"),
    ),
    sqlite_later="""
-- GET /stats/cost and the daily budget sum a day's variants.
CREATE INDEX IF NOT EXISTS variant_by_cost_day ON variant (cost_day);
""",
)

_COST_COLUMNS = ["cost_day", "render_s", "animate_s", "encode_s", "cost_usd"]
_VARIANT_COLUMNS = [
    "pk_id",
    "variant_id",
    "soul_id",
    "asset_url",
    "storage_key",
    "seed",
    "phash",
    "image_embed",
    "meta_json",
    *_COST_COLUMNS,
    "updated_at_ts",
]
_UPSERT_VARIANT = lww_upsert_sql(
    "variant", _VARIANT_COLUMNS, ["pk_id", "variant_id"], "storage_key"
)
LIVE_VARIANT = "storage_key <> ''"


def variant_from(row: Row) -> Variant:
    return Variant(
        variant_id=row["variant_id"],
        pk_id=row["pk_id"],
        soul_id=row["soul_id"],
        asset_url=row["asset_url"],
        storage_key=row["storage_key"],
        seed=row["seed"],
        phash=row["phash"],
        image_embed=row["image_embed"],
        meta=json.loads(row["meta_json"]),
        cost=_cost_from(row),
        updated_at_ts=row["updated_at_ts"],
    )


def _cost_from(row: Row) -> VariantCost | None:
    if row["cost_day"] is None:  # made before costs were recorded
        return None
    return VariantCost(
        day=row["cost_day"],
        render_s=row["render_s"],
        animate_s=row["animate_s"],
        encode_s=row["encode_s"],
        usd=row["cost_usd"],
    )


def _cost_row(cost: VariantCost | None) -> tuple[Any, ...]:
    if cost is None:
        return (None,) * len(_COST_COLUMNS)
    return (cost.day, cost.render_s, cost.animate_s, cost.encode_s, cost.usd)


class VariantRows(Store):
    ddl = DDL

    async def list_variants(self, pk_id: str) -> list[Variant]:
        rows = await self._rows(
            f"SELECT * FROM variant WHERE pk_id = ? AND {LIVE_VARIANT} ORDER BY variant_id",
            (pk_id,),
        )
        return [variant_from(r) for r in rows]

    async def count_variants(self, pk_id: str) -> int:
        rows = await self._rows(
            f"SELECT count(*) AS n FROM variant WHERE pk_id = ? AND {LIVE_VARIANT}", (pk_id,)
        )
        return int(rows[0]["n"])

    async def upsert_variant(self, variant: Variant) -> None:
        await self._write(
            _UPSERT_VARIANT,
            (
                variant.pk_id,
                variant.variant_id,
                variant.soul_id,
                variant.asset_url,
                variant.storage_key,
                variant.seed,
                variant.phash,
                variant.image_embed,
                json.dumps(variant.meta, sort_keys=True),
                *_cost_row(variant.cost),
                variant.updated_at_ts,
            ),
        )

    async def get_variant(self, pk_id: str, variant_id: str) -> Variant | None:
        """The variant's row, a tombstone included (``Variant.deleted``)."""
        row = await self._row(
            "SELECT * FROM variant WHERE pk_id = ? AND variant_id = ?", (pk_id, variant_id)
        )
        return variant_from(row) if row else None

    async def find_variant(self, variant_id: str) -> Variant | None:
        """A variant by its id alone (the ``variant_by_id`` index), a tombstone included."""
        row = await self._row("SELECT * FROM variant WHERE variant_id = ?", (variant_id,))
        return variant_from(row) if row else None

    async def delete_variant(self, variant: Variant, ts: int) -> bool:
        """Its tombstone, written like any LWW row, so an older write (a retried create)
        cannot bring it back; it keeps what the variant cost. False: a newer write is there."""
        tombstone = (variant.pk_id, variant.variant_id, variant.soul_id, "", "", None, None, None)
        spent = _cost_row(variant.cost)
        return await self._write(_UPSERT_VARIANT, (*tombstone, "{}", *spent, ts)) > 0

    async def day_cost_usd(self, day: str) -> float:
        row = await self._row(
            "SELECT COALESCE(SUM(cost_usd), 0) AS usd FROM variant WHERE cost_day = ?", (day,)
        )
        return float(row["usd"]) if row else 0.0

    async def cost_by_day(self, since: str) -> list[Row]:
        """Per UTC day from ``since`` (YYYY-MM-DD) and soul: variants made, seconds, dollars."""
        return await self._rows(
            "SELECT cost_day, soul_id, COUNT(*) AS variants, SUM(render_s) AS render_s, "
            "SUM(animate_s) AS animate_s, SUM(encode_s) AS encode_s, SUM(cost_usd) AS usd "
            "FROM variant WHERE cost_day >= ? GROUP BY cost_day, soul_id "
            "ORDER BY cost_day, soul_id",
            (since,),
        )
