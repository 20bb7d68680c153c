"""The catalog's ``Store`` interface and its embedded SQLite backend, chosen by DSN.

Every hot path is a primary-key read (or a primary-key prefix scan) and every write is a
single-row, idempotent, last-write-wins upsert: no cross-row transactions, no joins.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, Protocol

from serve_app.prompts import soul_prefix_bounds
from serve_app.schemas import PromptKey, Soul, StyleProfile, Variant


class StoreUnavailable(RuntimeError):
    """The catalog database cannot be reached; callers answer 503 and retry later."""


class Store(Protocol):
    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...
    async def upsert_soul(self, soul: Soul, ts: int) -> None: ...
    async def get_soul(self, soul_id: str) -> Soul | None: ...
    async def get_style(self, soul_id: str) -> StyleProfile | None: ...
    async def list_styles(self) -> list[StyleProfile]: ...
    async def upsert_style(self, style: StyleProfile) -> None: ...
    async def insert_style_if_absent(self, style: StyleProfile) -> None: ...
    async def delete_style(self, soul_id: str, ts: int) -> bool: ...
    async def get_prompt_key(self, pk_id: str) -> PromptKey | None: ...
    async def list_prompt_keys(self, soul_id: str) -> list[PromptKey]: ...
    async def upsert_prompt_key(self, key: PromptKey) -> None: ...
    async def list_variants(self, pk_id: str) -> list[Variant]: ...
    async def upsert_variant(self, variant: Variant) -> None: ...
    async def seen_among(self, user_id: str, variant_ids: list[str]) -> set[str]: ...
    async def claim(self, user_id: str, variant_id: str, ts: int) -> bool: ...


def open_store(dsn: str) -> Store:
    if dsn.startswith("sqlite:///"):
        return SQLiteStore(Path(dsn.removeprefix("sqlite:///")))
    raise ValueError(f"unsupported catalog DSN {dsn.split('://')[0]!r}: use sqlite:///path.db")


SQLITE_DDL = """
CREATE TABLE IF NOT EXISTS soul (
  soul_id TEXT PRIMARY KEY, display_name TEXT NOT NULL, updated_at_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS soul_style_profile (
  soul_id TEXT PRIMARY KEY, base_model_ref TEXT NOT NULL, lora_ids_json TEXT NOT NULL,
  palette_json TEXT NOT NULL, negatives_json TEXT NOT NULL, motion_module TEXT,
  extra_json TEXT NOT NULL DEFAULT '{}', updated_at_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS prompt_key (
  pk_id TEXT PRIMARY KEY, soul_id TEXT NOT NULL, key_norm TEXT NOT NULL, key_hash TEXT NOT NULL,
  key_embed BLOB, meta_json TEXT NOT NULL DEFAULT '{}', updated_at_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS variant (
  pk_id TEXT NOT NULL, variant_id TEXT NOT NULL, soul_id TEXT NOT NULL, asset_url TEXT NOT NULL,
  storage_key TEXT NOT NULL, seed INTEGER, phash INTEGER, meta_json TEXT NOT NULL DEFAULT '{}',
  updated_at_ts INTEGER NOT NULL, PRIMARY KEY (pk_id, variant_id));
CREATE TABLE IF NOT EXISTS user_seen (
  user_id TEXT NOT NULL, variant_id TEXT NOT NULL, seen_at_ts INTEGER NOT NULL,
  PRIMARY KEY (user_id, variant_id));
CREATE TABLE IF NOT EXISTS landmark_log (
  soul_id TEXT NOT NULL, city_key TEXT NOT NULL, landmark_key TEXT NOT NULL,
  user_id TEXT NOT NULL DEFAULT '', used_at_ts INTEGER NOT NULL,
  PRIMARY KEY (soul_id, city_key, user_id, landmark_key));
CREATE TABLE IF NOT EXISTS work_lock (
  lock_key TEXT PRIMARY KEY, owner_id TEXT NOT NULL, expires_at_ts INTEGER NOT NULL,
  updated_at_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
  idem_key TEXT PRIMARY KEY, result_json TEXT NOT NULL, updated_at_ts INTEGER NOT NULL);
"""


def lww_upsert_sql(table: str, columns: list[str], keys: list[str], tiebreak: str) -> str:
    """A single-row upsert that only wins when newer; equal timestamps fall to ``tiebreak``."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
        f"WHERE excluded.updated_at_ts > {table}.updated_at_ts OR "
        f"(excluded.updated_at_ts = {table}.updated_at_ts "
        f"AND excluded.{tiebreak} > {table}.{tiebreak})"
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
_KEY_COLUMNS = [
    "pk_id",
    "soul_id",
    "key_norm",
    "key_hash",
    "key_embed",
    "meta_json",
    "updated_at_ts",
]
_VARIANT_COLUMNS = [
    "pk_id",
    "variant_id",
    "soul_id",
    "asset_url",
    "storage_key",
    "seed",
    "phash",
    "meta_json",
    "updated_at_ts",
]
_UPSERT_SOUL = lww_upsert_sql(
    "soul", ["soul_id", "display_name", "updated_at_ts"], ["soul_id"], "display_name"
)
_UPSERT_STYLE = lww_upsert_sql("soul_style_profile", _STYLE_COLUMNS, ["soul_id"], "extra_json")
_UPSERT_KEY = lww_upsert_sql("prompt_key", _KEY_COLUMNS, ["pk_id"], "key_norm")
_UPSERT_VARIANT = lww_upsert_sql(
    "variant", _VARIANT_COLUMNS, ["pk_id", "variant_id"], "storage_key"
)


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


# A deleted style is a row with an empty base model (a tombstone); readers skip it.
_LIVE = "base_model_ref <> ''"


def _style_tombstone(soul_id: str, ts: int) -> tuple[Any, ...]:
    return (soul_id, "", "[]", "{}", "[]", None, '{"deleted": true}', ts)


def _style_from(row: sqlite3.Row) -> StyleProfile:
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


def _key_from(row: sqlite3.Row) -> PromptKey:
    return PromptKey(
        pk_id=row["pk_id"],
        soul_id=row["soul_id"],
        key_norm=row["key_norm"],
        key_hash=row["key_hash"],
        key_embed=row["key_embed"],
        meta=json.loads(row["meta_json"]),
        updated_at_ts=row["updated_at_ts"],
    )


def _variant_from(row: sqlite3.Row) -> Variant:
    return Variant(
        variant_id=row["variant_id"],
        pk_id=row["pk_id"],
        soul_id=row["soul_id"],
        asset_url=row["asset_url"],
        storage_key=row["storage_key"],
        seed=row["seed"],
        phash=row["phash"],
        meta=json.loads(row["meta_json"]),
        updated_at_ts=row["updated_at_ts"],
    )


class SQLiteStore:
    """Embedded default. Statements take microseconds, so they run inline on the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("SQLite store is not open")
        return self._db

    async def open(self) -> None:
        await self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SQLITE_DDL)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def ping(self) -> None:
        try:
            self.db.execute("SELECT 1").fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def upsert_soul(self, soul: Soul, ts: int) -> None:
        self.db.execute(_UPSERT_SOUL, (soul.soul_id, soul.display_name, ts))

    async def get_soul(self, soul_id: str) -> Soul | None:
        row = self.db.execute(
            "SELECT soul_id, display_name FROM soul WHERE soul_id = ?", (soul_id,)
        ).fetchone()
        return Soul(soul_id=row["soul_id"], display_name=row["display_name"]) if row else None

    async def get_style(self, soul_id: str) -> StyleProfile | None:
        row = self.db.execute(
            f"SELECT * FROM soul_style_profile WHERE soul_id = ? AND {_LIVE}", (soul_id,)
        ).fetchone()
        return _style_from(row) if row else None

    async def list_styles(self) -> list[StyleProfile]:
        rows = self.db.execute(
            f"SELECT * FROM soul_style_profile WHERE {_LIVE} ORDER BY soul_id"
        ).fetchall()
        return [_style_from(r) for r in rows]

    async def upsert_style(self, style: StyleProfile) -> None:
        self.db.execute(_UPSERT_STYLE, _style_row(style))

    async def insert_style_if_absent(self, style: StyleProfile) -> None:
        cols = ", ".join(_STYLE_COLUMNS)
        marks = ", ".join("?" for _ in _STYLE_COLUMNS)
        self.db.execute(
            f"INSERT INTO soul_style_profile ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING",
            _style_row(style),
        )

    async def delete_style(self, soul_id: str, ts: int) -> bool:
        """A tombstone written like any other LWW row, so an older write cannot resurrect it."""
        existed = await self.get_style(soul_id) is not None
        cur = self.db.execute(_UPSERT_STYLE, _style_tombstone(soul_id, ts))
        return existed and cur.rowcount > 0

    async def get_prompt_key(self, pk_id: str) -> PromptKey | None:
        row = self.db.execute("SELECT * FROM prompt_key WHERE pk_id = ?", (pk_id,)).fetchone()
        return _key_from(row) if row else None

    async def list_prompt_keys(self, soul_id: str) -> list[PromptKey]:
        low, high = soul_prefix_bounds(soul_id)
        rows = self.db.execute(
            "SELECT * FROM prompt_key WHERE pk_id >= ? AND pk_id < ? ORDER BY pk_id", (low, high)
        ).fetchall()
        return [_key_from(r) for r in rows]

    async def upsert_prompt_key(self, key: PromptKey) -> None:
        self.db.execute(
            _UPSERT_KEY,
            (
                key.pk_id,
                key.soul_id,
                key.key_norm,
                key.key_hash,
                key.key_embed,
                json.dumps(key.meta, sort_keys=True),
                key.updated_at_ts,
            ),
        )

    async def list_variants(self, pk_id: str) -> list[Variant]:
        rows = self.db.execute(
            "SELECT * FROM variant WHERE pk_id = ? ORDER BY variant_id", (pk_id,)
        ).fetchall()
        return [_variant_from(r) for r in rows]

    async def upsert_variant(self, variant: Variant) -> None:
        self.db.execute(
            _UPSERT_VARIANT,
            (
                variant.pk_id,
                variant.variant_id,
                variant.soul_id,
                variant.asset_url,
                variant.storage_key,
                variant.seed,
                variant.phash,
                json.dumps(variant.meta, sort_keys=True),
                variant.updated_at_ts,
            ),
        )

    async def seen_among(self, user_id: str, variant_ids: list[str]) -> set[str]:
        if not variant_ids:
            return set()
        marks = ", ".join("?" for _ in variant_ids)
        rows = self.db.execute(
            f"SELECT variant_id FROM user_seen WHERE user_id = ? AND variant_id IN ({marks})",
            (user_id, *variant_ids),
        ).fetchall()
        return {r["variant_id"] for r in rows}

    async def claim(self, user_id: str, variant_id: str, ts: int) -> bool:
        row = self.db.execute(
            "INSERT INTO user_seen (user_id, variant_id, seen_at_ts) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING variant_id",
            (user_id, variant_id, ts),
        ).fetchone()
        return row is not None
