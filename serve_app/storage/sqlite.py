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
  storage_key TEXT NOT NULL, seed INTEGER, phash INTEGER, meta_json TEXT NOT NULL DEFAULT '{}',
  updated_at_ts INTEGER NOT NULL, PRIMARY KEY (pk_id, variant_id));
CREATE TABLE IF NOT EXISTS user_seen (
  user_id TEXT NOT NULL, variant_id TEXT NOT NULL, seen_at_ts INTEGER NOT NULL,
  PRIMARY KEY (user_id, variant_id));
CREATE TABLE IF NOT EXISTS landmark_log (
  soul_id TEXT NOT NULL, city_key TEXT NOT NULL, landmark_key TEXT NOT NULL,
  user_id TEXT NOT NULL DEFAULT '', used_at_ts INTEGER NOT NULL,
  angle_key TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (soul_id, city_key, user_id, landmark_key));
CREATE TABLE IF NOT EXISTS work_lock (
  lock_key TEXT PRIMARY KEY, owner_id TEXT NOT NULL, expires_at_ts INTEGER NOT NULL,
  updated_at_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
  idem_key TEXT PRIMARY KEY, result_json TEXT NOT NULL, updated_at_ts INTEGER NOT NULL);
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
        columns = {row["name"] for row in db.execute("PRAGMA table_info(landmark_log)")}
        if "angle_key" not in columns:  # a catalog made before selfies recorded angles
            db.execute("ALTER TABLE landmark_log ADD COLUMN angle_key TEXT NOT NULL DEFAULT ''")
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
