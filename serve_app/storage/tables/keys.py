"""Prompt keys (``prompt_key``, keyed ``pk_id`` = ``<soul>:<hash>``: a soul's keys are a
primary-key range) and each soul's log of keys with embeddings (``prompt_key_log``), from
which other catalog replicas learn of new keys."""

from __future__ import annotations

import json

from serve_app.prompts import key_hash, soul_prefix_bounds
from serve_app.schemas import PromptKey
from serve_app.storage.store import Row, Store, TableDDL, insert_sql, lww_upsert_sql

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS prompt_key (
  pk_id TEXT PRIMARY KEY, soul_id TEXT NOT NULL, key_norm TEXT NOT NULL, key_hash TEXT NOT NULL,
  key_embed BLOB, meta_json TEXT NOT NULL DEFAULT '{}', updated_at_ts INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS prompt_key_log (
  soul_id TEXT NOT NULL, seq TEXT NOT NULL, pk_id TEXT NOT NULL, PRIMARY KEY (soul_id, seq));
""",
    # Primary-key text columns are COLLATE "C": byte order, so the pk_id prefix range of a soul
    # ("nova:" <= pk_id < "nova;") means the same as in SQLite and is served by the PK index.
    postgres="""
CREATE TABLE IF NOT EXISTS prompt_key (
  pk_id TEXT COLLATE "C" PRIMARY KEY, soul_id TEXT NOT NULL, key_norm TEXT NOT NULL,
  key_hash TEXT NOT NULL, key_embed BYTEA, meta_json JSONB NOT NULL DEFAULT '{}',
  updated_at_ts BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS prompt_key_log (
  soul_id TEXT COLLATE "C" NOT NULL, seq TEXT COLLATE "C" NOT NULL, pk_id TEXT NOT NULL,
  PRIMARY KEY (soul_id, seq));
""",
)

_KEY_COLUMNS = [
    "pk_id",
    "soul_id",
    "key_norm",
    "key_hash",
    "key_embed",
    "meta_json",
    "updated_at_ts",
]
_UPSERT_KEY = lww_upsert_sql("prompt_key", _KEY_COLUMNS, ["pk_id"], "key_norm")
_SOUL_RANGE = "pk_id >= ? AND pk_id > ? AND pk_id < ? ORDER BY pk_id LIMIT ?"


def _key_from(row: Row) -> PromptKey:
    return PromptKey(
        pk_id=row["pk_id"],
        soul_id=row["soul_id"],
        key_norm=row["key_norm"],
        key_hash=row["key_hash"],
        key_embed=row["key_embed"],
        meta=json.loads(row["meta_json"]),
        updated_at_ts=row["updated_at_ts"],
    )


class KeyRows(Store):
    ddl = DDL

    async def get_prompt_key(self, pk_id: str) -> PromptKey | None:
        row = await self._row("SELECT * FROM prompt_key WHERE pk_id = ?", (pk_id,))
        return _key_from(row) if row else None

    async def prompt_keys_page(self, soul_id: str, after: str, limit: int) -> list[PromptKey]:
        """A page of the soul's keys in key order, after ``after`` (a primary-key range)."""
        low, high = soul_prefix_bounds(soul_id)
        rows = await self._rows(
            f"SELECT * FROM prompt_key WHERE {_SOUL_RANGE}", (low, after, high, limit)
        )
        return [_key_from(r) for r in rows]

    async def key_vectors_page(
        self, soul_id: str, after: str, limit: int
    ) -> list[tuple[str, bytes]]:
        """``prompt_keys_page`` narrowed to what an index is built from: (pk_id, embedding),
        the embedding empty for a key without one."""
        low, high = soul_prefix_bounds(soul_id)
        rows = await self._rows(
            f"SELECT pk_id, key_embed FROM prompt_key WHERE {_SOUL_RANGE}",
            (low, after, high, limit),
        )
        return [(r["pk_id"], bytes(r["key_embed"] or b"")) for r in rows]

    async def key_texts_page(
        self, soul_id: str, after: str, limit: int
    ) -> list[tuple[str, str, bool]]:
        """``prompt_keys_page`` narrowed to what a rebuild reads: (pk_id, key_norm, whether the
        key has an embedding)."""
        low, high = soul_prefix_bounds(soul_id)
        rows = await self._rows(
            "SELECT pk_id, key_norm, key_embed IS NOT NULL AS embedded FROM prompt_key "
            f"WHERE {_SOUL_RANGE}",
            (low, after, high, limit),
        )
        return [(r["pk_id"], r["key_norm"], bool(r["embedded"])) for r in rows]

    async def count_prompt_keys(self, soul_id: str) -> int:
        """The soul's keys, counted over a primary-key range."""
        low, high = soul_prefix_bounds(soul_id)
        rows = await self._rows(
            "SELECT count(*) AS n FROM prompt_key WHERE pk_id >= ? AND pk_id < ?", (low, high)
        )
        return int(rows[0]["n"])

    async def rewrite_prompt_key(self, pk_id: str, key_norm: str, embed: bytes, ts: int) -> bool:
        """A key's text and embedding recomputed (its id, meta and variants stay): one row by
        its primary key, unless a later write stands."""
        changed = await self._write(
            "UPDATE prompt_key SET key_norm = ?, key_hash = ?, key_embed = ?, updated_at_ts = ? "
            "WHERE pk_id = ? AND updated_at_ts <= ?",
            (key_norm, key_hash(key_norm), embed, ts, pk_id, ts),
        )
        return changed > 0

    async def upsert_prompt_key(self, key: PromptKey) -> None:
        meta = json.dumps(key.meta, sort_keys=True)
        await self._write(
            _UPSERT_KEY,
            (
                key.pk_id,
                key.soul_id,
                key.key_norm,
                key.key_hash,
                key.key_embed,
                meta,
                key.updated_at_ts,
            ),
        )

    async def log_prompt_key(self, soul_id: str, seq: str, pk_id: str) -> None:
        """Append to the soul's log of keys with embeddings (``seq``: a ULID), from which other
        catalog replicas learn of them."""
        await self._write(
            insert_sql("prompt_key_log", ["soul_id", "seq", "pk_id"]), (soul_id, seq, pk_id)
        )

    async def prompt_key_log_after(self, soul_id: str, after: str, limit: int) -> list[Row]:
        """The soul's log entries (``seq``, ``pk_id``) after ``after``, oldest first: a range of
        the primary key."""
        return await self._rows(
            "SELECT seq, pk_id FROM prompt_key_log WHERE soul_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (soul_id, after, limit),
        )
