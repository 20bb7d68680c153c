"""Best-effort locks with a TTL (``work_lock``, keyed ``lock_key``): work shared across replicas,
and the liveness rows of replicas and job workers."""

from __future__ import annotations

from serve_app.storage.store import Row, Store, TableDDL

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS work_lock (
  lock_key TEXT PRIMARY KEY, owner_id TEXT NOT NULL, expires_at_ts INTEGER NOT NULL,
  updated_at_ts INTEGER NOT NULL);
""",
    postgres="""
CREATE TABLE IF NOT EXISTS work_lock (
  lock_key TEXT COLLATE "C" PRIMARY KEY, owner_id TEXT NOT NULL, expires_at_ts BIGINT NOT NULL,
  updated_at_ts BIGINT NOT NULL);
""",
)
# Taken when free, expired, or already ours (a renewal); RETURNING tells whether we hold it.
_TRY_LOCK = (
    "INSERT INTO work_lock (lock_key, owner_id, expires_at_ts, updated_at_ts) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (lock_key) DO UPDATE SET owner_id = excluded.owner_id, "
    "expires_at_ts = excluded.expires_at_ts, updated_at_ts = excluded.updated_at_ts "
    "WHERE work_lock.expires_at_ts <= excluded.updated_at_ts "
    "OR work_lock.owner_id = excluded.owner_id RETURNING owner_id"
)


class LockRows(Store):
    ddl = DDL

    async def try_lock(self, lock_key: str, owner_id: str, ts: int, ttl_ms: int) -> bool:
        """Take or renew ``lock_key`` until ``ts + ttl_ms``; False while another owner holds it."""
        row = await self._row(_TRY_LOCK, (lock_key, owner_id, ts + ttl_ms, ts))
        return row is not None

    async def get_lock(self, lock_key: str) -> Row | None:
        return await self._row(
            "SELECT owner_id, expires_at_ts FROM work_lock WHERE lock_key = ?", (lock_key,)
        )

    async def take_over_lock(
        self, lock_key: str, from_owner: str, owner_id: str, ts: int, ttl_ms: int
    ) -> bool:
        """Take a lock from the owner read (only if it still holds it), before its TTL."""
        changed = await self._write(
            "UPDATE work_lock SET owner_id = ?, expires_at_ts = ?, updated_at_ts = ? "
            "WHERE lock_key = ? AND owner_id = ?",
            (owner_id, ts + ttl_ms, ts, lock_key, from_owner),
        )
        return changed > 0

    async def live_locks(self, prefix: str, ts: int) -> list[str]:
        """Owners of the unexpired locks whose key starts with ``prefix`` (a key prefix scan)."""
        rows = await self._rows(
            "SELECT owner_id FROM work_lock WHERE lock_key >= ? AND lock_key < ? "
            "AND expires_at_ts > ?",
            (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1), ts),
        )
        return [r["owner_id"] for r in rows]

    async def unlock(self, lock_key: str, owner_id: str) -> None:
        await self._write(
            "DELETE FROM work_lock WHERE lock_key = ? AND owner_id = ?", (lock_key, owner_id)
        )

    async def locks_after(self, after: str, limit: int) -> list[Row]:
        """A page of every lock, in key order (the sweeper's walk)."""
        return await self._rows(
            "SELECT lock_key, owner_id, expires_at_ts FROM work_lock WHERE lock_key > ? "
            "ORDER BY lock_key LIMIT ?",
            (after, limit),
        )

    async def drop_expired_lock(self, lock_key: str, owner_id: str, expires_at_ts: int) -> int:
        """Only the version read: a lock renewed or taken since stays."""
        return await self._write(
            "DELETE FROM work_lock WHERE lock_key = ? AND owner_id = ? AND expires_at_ts = ?",
            (lock_key, owner_id, expires_at_ts),
        )
