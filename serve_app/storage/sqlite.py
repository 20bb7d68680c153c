"""The embedded default catalog backend: one SQLite file (WAL), statements run inline."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serve_app.storage.store import Row, Store, StoreUnavailable

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
  storage_key TEXT NOT NULL, seed INTEGER, phash INTEGER, image_embed BLOB,
  meta_json TEXT NOT NULL DEFAULT '{}', cost_day TEXT, render_s REAL, animate_s REAL,
  encode_s REAL, cost_usd REAL, updated_at_ts INTEGER NOT NULL, PRIMARY KEY (pk_id, variant_id));
-- DELETE /variants/{variant_id} names a variant by its id alone.
CREATE INDEX IF NOT EXISTS variant_by_id ON variant (variant_id);
CREATE TABLE IF NOT EXISTS user_seen (
  user_id TEXT NOT NULL, variant_id TEXT NOT NULL, seen_at_ts INTEGER NOT NULL,
  pk_id TEXT NOT NULL DEFAULT '', via TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (user_id, variant_id));
CREATE TABLE IF NOT EXISTS landmark_log (
  soul_id TEXT NOT NULL, city_key TEXT NOT NULL, landmark_key TEXT NOT NULL,
  user_id TEXT NOT NULL DEFAULT '', used_at_ts INTEGER NOT NULL,
  angle_key TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (soul_id, city_key, user_id, landmark_key));
CREATE TABLE IF NOT EXISTS prompt_key_log (
  soul_id TEXT NOT NULL, seq TEXT NOT NULL, pk_id TEXT NOT NULL, PRIMARY KEY (soul_id, seq));
CREATE TABLE IF NOT EXISTS work_lock (
  lock_key TEXT PRIMARY KEY, owner_id TEXT NOT NULL, expires_at_ts INTEGER NOT NULL,
  updated_at_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
  idem_key TEXT PRIMARY KEY, result_json TEXT NOT NULL, updated_at_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS job (
  client_id TEXT NOT NULL, job_id TEXT NOT NULL, kind TEXT NOT NULL, priority TEXT NOT NULL,
  status TEXT NOT NULL, user_id TEXT NOT NULL, soul_id TEXT NOT NULL, spec_json TEXT NOT NULL,
  webhook_url TEXT, attempts INTEGER NOT NULL, max_attempts INTEGER NOT NULL,
  fence INTEGER NOT NULL, done INTEGER NOT NULL, total INTEGER NOT NULL,
  stage_json TEXT NOT NULL, result_json TEXT NOT NULL, error_json TEXT,
  cancel_requested INTEGER NOT NULL, dead_letter INTEGER NOT NULL,
  created_at_ts INTEGER NOT NULL, started_at_ts INTEGER, finished_at_ts INTEGER,
  updated_at_ts INTEGER NOT NULL, PRIMARY KEY (client_id, job_id));
CREATE TABLE IF NOT EXISTS job_queue (
  lane INTEGER NOT NULL, client_id TEXT NOT NULL, job_id TEXT NOT NULL, kind TEXT NOT NULL,
  lease_owner TEXT NOT NULL, lease_version INTEGER NOT NULL, lease_expires_ts INTEGER NOT NULL,
  not_before_ts INTEGER NOT NULL, created_at_ts INTEGER NOT NULL,
  PRIMARY KEY (lane, client_id, job_id));
"""
# Columns added after a table first shipped: (table, column, definition).
ADDED_COLUMNS = [
    ("landmark_log", "angle_key", "TEXT NOT NULL DEFAULT ''"),
    ("user_seen", "pk_id", "TEXT NOT NULL DEFAULT ''"),
    ("user_seen", "via", "TEXT NOT NULL DEFAULT ''"),
    ("variant", "image_embed", "BLOB"),
    *(("variant", column, "REAL") for column in ("render_s", "animate_s", "encode_s", "cost_usd")),
    ("variant", "cost_day", "TEXT"),
]
# Indexes on added columns: made once the columns are there.
LATER_DDL = """
-- GET /stats/cost and the daily budget sum a day's variants.
CREATE INDEX IF NOT EXISTS variant_by_cost_day ON variant (cost_day);
"""


class SQLiteStore(Store):
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
        for table, column, definition in ADDED_COLUMNS:  # a catalog made by an older version
            columns = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
            if column not in columns:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        db.executescript(LATER_DDL)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:  # locked past the timeout, disk gone, ...
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self.db.execute(sql, params).rowcount
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc
