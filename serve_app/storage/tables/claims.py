"""Who was sent which variant (``user_seen``, keyed ``(user_id, variant_id)``): a claim is one
insert-if-absent, so a variant is delivered to a user at most once."""

from __future__ import annotations

from serve_app.storage.store import Row, Store, TableDDL
from serve_app.storage.tables.variants import LIVE_VARIANT

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS user_seen (
  user_id TEXT NOT NULL, variant_id TEXT NOT NULL, seen_at_ts INTEGER NOT NULL,
  pk_id TEXT NOT NULL DEFAULT '', via TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (user_id, variant_id));
""",
    postgres="""
CREATE TABLE IF NOT EXISTS user_seen (
  user_id TEXT COLLATE "C" NOT NULL, variant_id TEXT COLLATE "C" NOT NULL,
  seen_at_ts BIGINT NOT NULL, PRIMARY KEY (user_id, variant_id));
ALTER TABLE user_seen ADD COLUMN IF NOT EXISTS pk_id TEXT NOT NULL DEFAULT '';
ALTER TABLE user_seen ADD COLUMN IF NOT EXISTS via TEXT NOT NULL DEFAULT '';
""",
    sqlite_added=(
        ("user_seen", "pk_id", "TEXT NOT NULL DEFAULT ''"),
        ("user_seen", "via", "TEXT NOT NULL DEFAULT ''"),
    ),
)


class ClaimRows(Store):
    ddl = DDL

    async def seen_among(self, user_id: str, variant_ids: list[str]) -> set[str]:
        if not variant_ids:
            return set()
        marks = ", ".join("?" for _ in variant_ids)
        rows = await self._rows(
            f"SELECT variant_id FROM user_seen WHERE user_id = ? AND variant_id IN ({marks})",
            (user_id, *variant_ids),
        )
        return {r["variant_id"] for r in rows}

    async def claim(
        self, user_id: str, variant_id: str, ts: int, pk_id: str = "", via: str = ""
    ) -> bool:
        """True only for the one request whose insert created the row; False too once the
        variant is a tombstone, so a claim made after its delete never delivers it. ``via``
        names the job item the claim was made for (empty for a synchronous request)."""
        row = await self._row(
            "INSERT INTO user_seen (user_id, variant_id, seen_at_ts, pk_id, via) "
            "SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM variant WHERE pk_id = ? "
            f"AND variant_id = ? AND NOT ({LIVE_VARIANT})) "
            "ON CONFLICT DO NOTHING RETURNING variant_id",
            (user_id, variant_id, ts, pk_id, via, pk_id, variant_id),
        )
        return row is not None

    async def seen_page(self, user_id: str, before: str, limit: int) -> list[Row]:
        """What the user was sent (``pk_id``, ``variant_id``, ``seen_at_ts``), newest variant
        first, below ``before`` (a variant id; empty: from the newest): a backward range of the
        primary key."""
        return await self._rows(
            "SELECT pk_id, variant_id, seen_at_ts FROM user_seen WHERE user_id = ? "
            "AND variant_id < ? ORDER BY variant_id DESC LIMIT ?",
            (user_id, before or "~", limit),  # "~" sorts after every ULID
        )

    async def claimed_via(self, user_id: str, via: str) -> tuple[str, str] | None:
        """(pk_id, variant_id) a job item already claimed for the user: a prefix scan of the
        user's history, run only when a job item is retried."""
        row = await self._row(
            "SELECT pk_id, variant_id FROM user_seen WHERE user_id = ? AND via = ?",
            (user_id, via),
        )
        return (row["pk_id"], row["variant_id"]) if row else None
