"""Idempotency-Key records (``idempotency``, keyed ``idem_key``): compare-and-set on the row's
timestamp, one row at a time."""

from __future__ import annotations

from serve_app.storage.store import Row, Store, TableDDL

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS idempotency (
  idem_key TEXT PRIMARY KEY, result_json TEXT NOT NULL, updated_at_ts INTEGER NOT NULL);
""",
    postgres="""
CREATE TABLE IF NOT EXISTS idempotency (
  idem_key TEXT COLLATE "C" PRIMARY KEY, result_json JSONB NOT NULL,
  updated_at_ts BIGINT NOT NULL);
""",
)


class ReplayRows(Store):
    ddl = DDL

    async def insert_idempotency(self, idem_key: str, record: str, ts: int) -> bool:
        row = await self._row(
            "INSERT INTO idempotency (idem_key, result_json, updated_at_ts) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING idem_key",
            (idem_key, record, ts),
        )
        return row is not None

    async def get_idempotency(self, idem_key: str) -> tuple[str, int] | None:
        row = await self._row(
            "SELECT result_json, updated_at_ts FROM idempotency WHERE idem_key = ?", (idem_key,)
        )
        return (row["result_json"], row["updated_at_ts"]) if row else None

    async def replace_idempotency(self, idem_key: str, record: str, ts: int, if_ts: int) -> bool:
        """Overwrite the record only if it is still the version stamped ``if_ts``."""
        changed = await self._write(
            "UPDATE idempotency SET result_json = ?, updated_at_ts = ? "
            "WHERE idem_key = ? AND updated_at_ts = ?",
            (record, ts, idem_key, if_ts),
        )
        return changed > 0

    async def delete_idempotency(self, idem_key: str, if_ts: int) -> int:
        return await self._write(
            "DELETE FROM idempotency WHERE idem_key = ? AND updated_at_ts = ?", (idem_key, if_ts)
        )

    async def idempotency_after(self, after: str, limit: int) -> list[Row]:
        """A page of every record, in key order (the sweeper's walk)."""
        return await self._rows(
            "SELECT idem_key, result_json, updated_at_ts FROM idempotency WHERE idem_key > ? "
            "ORDER BY idem_key LIMIT ?",
            (after, limit),
        )
