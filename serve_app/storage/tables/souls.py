"""Souls and their style profiles (``soul``, ``soul_style_profile``): one row per soul each.

A deleted style is a row with an empty base model (a tombstone); readers skip it.
"""

from __future__ import annotations

import json
from typing import Any

from serve_app.schemas import Soul, StyleProfile
from serve_app.storage.store import Row, Store, TableDDL, insert_sql, lww_upsert_sql

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS soul (
  soul_id TEXT PRIMARY KEY, display_name TEXT NOT NULL, updated_at_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS soul_style_profile (
  soul_id TEXT PRIMARY KEY, base_model_ref TEXT NOT NULL, lora_ids_json TEXT NOT NULL,
  palette_json TEXT NOT NULL, negatives_json TEXT NOT NULL, motion_module TEXT,
  extra_json TEXT NOT NULL DEFAULT '{}', updated_at_ts INTEGER NOT NULL);
""",
    postgres="""
CREATE TABLE IF NOT EXISTS soul (
  soul_id TEXT COLLATE "C" PRIMARY KEY, display_name TEXT NOT NULL,
  updated_at_ts BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS soul_style_profile (
  soul_id TEXT COLLATE "C" PRIMARY KEY, base_model_ref TEXT NOT NULL,
  lora_ids_json JSONB NOT NULL, palette_json JSONB NOT NULL, negatives_json JSONB NOT NULL,
  motion_module TEXT, extra_json JSONB NOT NULL DEFAULT '{}', updated_at_ts BIGINT NOT NULL);
""",
)

_STYLE_COLUMNS = [
    "soul_id",
    "base_model_ref",
    "lora_ids_json",
    "palette_json",
    "negatives_json",
    "motion_module",
    "extra_json",
    "updated_at_ts",
]
_UPSERT_SOUL = lww_upsert_sql(
    "soul", ["soul_id", "display_name", "updated_at_ts"], ["soul_id"], "display_name"
)
_UPSERT_STYLE = lww_upsert_sql("soul_style_profile", _STYLE_COLUMNS, ["soul_id"], "extra_json")
_LIVE = "base_model_ref <> ''"


def _style_row(style: StyleProfile) -> tuple[Any, ...]:
    extra = {**style.extra, "style_tags": style.style_tags}
    return (
        style.soul_id,
        style.base_model_ref,
        json.dumps(style.lora_ids),
        json.dumps(style.palette, sort_keys=True),
        json.dumps(style.negatives),
        style.motion_module,
        json.dumps(extra, sort_keys=True),
        style.updated_at_ts,
    )


def _style_tombstone(soul_id: str, ts: int) -> tuple[Any, ...]:
    return (soul_id, "", "[]", "{}", "[]", None, '{"deleted": true}', ts)


def _style_from(row: Row) -> StyleProfile:
    extra = json.loads(row["extra_json"])
    return StyleProfile(
        soul_id=row["soul_id"],
        base_model_ref=row["base_model_ref"],
        lora_ids=json.loads(row["lora_ids_json"]),
        palette=json.loads(row["palette_json"]),
        negatives=json.loads(row["negatives_json"]),
        motion_module=row["motion_module"],
        style_tags=extra.pop("style_tags", []),
        extra=extra,
        updated_at_ts=row["updated_at_ts"],
    )


class SoulRows(Store):
    ddl = DDL

    async def upsert_soul(self, soul: Soul, ts: int) -> None:
        await self._write(_UPSERT_SOUL, (soul.soul_id, soul.display_name, ts))

    async def get_soul(self, soul_id: str) -> Soul | None:
        row = await self._row(
            "SELECT soul_id, display_name FROM soul WHERE soul_id = ?", (soul_id,)
        )
        return Soul(soul_id=row["soul_id"], display_name=row["display_name"]) if row else None

    async def get_style(self, soul_id: str) -> StyleProfile | None:
        row = await self._row(
            f"SELECT * FROM soul_style_profile WHERE soul_id = ? AND {_LIVE}", (soul_id,)
        )
        return _style_from(row) if row else None

    async def list_styles(self) -> list[StyleProfile]:
        rows = await self._rows(f"SELECT * FROM soul_style_profile WHERE {_LIVE} ORDER BY soul_id")
        return [_style_from(r) for r in rows]

    async def upsert_style(self, style: StyleProfile) -> None:
        await self._write(_UPSERT_STYLE, _style_row(style))

    async def insert_style_if_absent(self, style: StyleProfile) -> None:
        await self._write(insert_sql("soul_style_profile", _STYLE_COLUMNS), _style_row(style))

    async def delete_style(self, soul_id: str, ts: int) -> bool:
        """A tombstone written like any other LWW row, so an older write cannot resurrect it;
        nothing is written when there is no live style (an unknown soul writes no row)."""
        if await self.get_style(soul_id) is None:
            return False
        return await self._write(_UPSERT_STYLE, _style_tombstone(soul_id, ts)) > 0
