"""Demand per prompt key (``key_demand``, keyed ``(pk_id, replica_id)``): each Catalog
replica's decaying counters of a key, one row per replica and key, written whole
(last-write-wins) on a timer. A reader adds the replicas' rows up; a row no replica refreshes
decays to nothing and is dropped by whoever reads it then."""

from __future__ import annotations

from serve_app.storage.store import Row, Store, TableDDL, lww_upsert_sql

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS key_demand (
  pk_id TEXT NOT NULL, replica_id TEXT NOT NULL, soul_id TEXT NOT NULL,
  requests REAL NOT NULL, top_seen REAL NOT NULL, updated_at_ts INTEGER NOT NULL,
  PRIMARY KEY (pk_id, replica_id));
""",
    postgres="""
CREATE TABLE IF NOT EXISTS key_demand (
  pk_id TEXT COLLATE "C" NOT NULL, replica_id TEXT COLLATE "C" NOT NULL, soul_id TEXT NOT NULL,
  requests DOUBLE PRECISION NOT NULL, top_seen DOUBLE PRECISION NOT NULL,
  updated_at_ts BIGINT NOT NULL, PRIMARY KEY (pk_id, replica_id));
""",
)
_COLUMNS = ["pk_id", "replica_id", "soul_id", "requests", "top_seen", "updated_at_ts"]
_UPSERT = lww_upsert_sql("key_demand", _COLUMNS, ["pk_id", "replica_id"], "requests")


class DemandRows(Store):
    ddl = DDL

    async def put_demand(
        self, pk_id: str, replica_id: str, requests: float, top_seen: float, ts: int
    ) -> None:
        """One replica's counters of a key as of ``ts``: one single-row upsert."""
        soul_id = pk_id.partition(":")[0]
        await self._write(_UPSERT, (pk_id, replica_id, soul_id, requests, top_seen, ts))

    async def demand_rows(self) -> list[Row]:
        """Every replica's counters of every key it tracks (the table stays small: a replica
        writes only the keys asked for lately, and cold rows are dropped)."""
        return await self._rows(
            "SELECT pk_id, replica_id, requests, top_seen, updated_at_ts FROM key_demand "
            "ORDER BY pk_id, replica_id"
        )

    async def demand_of(self, pk_id: str) -> list[Row]:
        """Every replica's counters of one key (a primary-key prefix scan)."""
        return await self._rows(
            "SELECT pk_id, replica_id, requests, top_seen, updated_at_ts FROM key_demand "
            "WHERE pk_id = ? ORDER BY replica_id",
            (pk_id,),
        )

    async def drop_demand(self, pk_id: str, replica_id: str, updated_at_ts: int) -> int:
        """Only the version read: a row refreshed since stays."""
        return await self._write(
            "DELETE FROM key_demand WHERE pk_id = ? AND replica_id = ? AND updated_at_ts = ?",
            (pk_id, replica_id, updated_at_ts),
        )
