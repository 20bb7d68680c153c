"""A client's queued-job slots (``job_slot``, keyed ``(client_id, slot)``): a job takes one of
its client's ``quota`` slots before its row is written, by a conditional insert (``INSERT … ON
CONFLICT DO NOTHING RETURNING``): of two concurrent submits for the last free slot exactly one
gets it, on SQLite and PostgreSQL alike. A slot names the job that holds it; it is given up
when that job has finished (or never came to be), by a delete conditional on that job."""

from __future__ import annotations

from serve_app.storage.store import Row, Store, TableDDL, insert_sql

DDL = TableDDL(
    sqlite="""
CREATE TABLE IF NOT EXISTS job_slot (
  client_id TEXT NOT NULL, slot INTEGER NOT NULL, job_id TEXT NOT NULL,
  claimed_at_ts INTEGER NOT NULL, PRIMARY KEY (client_id, slot));
""",
    postgres="""
CREATE TABLE IF NOT EXISTS job_slot (
  client_id TEXT COLLATE "C" NOT NULL, slot INT NOT NULL, job_id TEXT COLLATE "C" NOT NULL,
  claimed_at_ts BIGINT NOT NULL, PRIMARY KEY (client_id, slot));
""",
)

_CLAIM = insert_sql(
    "job_slot",
    ["client_id", "slot", "job_id", "claimed_at_ts"],
    "ON CONFLICT DO NOTHING RETURNING slot",
)


class JobSlotRows(Store):
    ddl = DDL

    async def job_slots(self, client_id: str) -> list[Row]:
        """The client's held slots, by number: a primary-key prefix."""
        return await self._rows(
            "SELECT * FROM job_slot WHERE client_id = ? ORDER BY slot", (client_id,)
        )

    async def claim_job_slot(self, client_id: str, slot: int, job_id: str, ts: int) -> bool:
        """Take the slot for ``job_id``; False: it is held (by a concurrent submit, say)."""
        return bool(await self._rows(_CLAIM, (client_id, slot, job_id, ts)))

    async def free_job_slot(self, client_id: str, slot: int, job_id: str) -> bool:
        """Give the slot up, only if ``job_id`` still holds it."""
        changed = await self._write(
            "DELETE FROM job_slot WHERE client_id = ? AND slot = ? AND job_id = ?",
            (client_id, slot, job_id),
        )
        return changed > 0
