"""The job tables (``job``, ``job_queue``), part of the catalog store (same discipline:
primary-key reads and prefix scans, single-row writes, no transactions).

- ``job``, keyed ``(client_id, job_id)``: the document a client reads. A client's jobs are a
  prefix of the key, so listing is a prefix scan and a job of another client cannot be named.
- ``job_queue``, keyed ``(lane, client_id, job_id)``: one row per job that is not finished yet,
  in its priority lane. The row is the lease: ``lease_version`` goes up by one with every lease
  (a compare-and-set), and every write of the job's document by a worker is fenced by it
  (``job.fence <= version``), so a worker whose lease was taken over can no longer write.

Every update of a ``job`` row tells the replicas that stream its events, and every queue row
added, released (its lease given up) or removed tells the leases that wait for a job
(``storage/changes.py``: a trigger's ``pg_notify`` on PostgreSQL, datagrams from the SQLite
store); taking and renewing a lease tell no one.
"""

from __future__ import annotations

from typing import Any

from serve_app.storage.store import Row, Store, TableDDL, insert_sql

DDL = TableDDL(
    sqlite="""
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
""",
    postgres="""
CREATE TABLE IF NOT EXISTS job (
  client_id TEXT COLLATE "C" NOT NULL, job_id TEXT COLLATE "C" NOT NULL, kind TEXT NOT NULL,
  priority TEXT NOT NULL, status TEXT NOT NULL, user_id TEXT NOT NULL, soul_id TEXT NOT NULL,
  spec_json JSONB NOT NULL, webhook_url TEXT, attempts INT NOT NULL, max_attempts INT NOT NULL,
  fence BIGINT NOT NULL, done INT NOT NULL, total INT NOT NULL, stage_json JSONB NOT NULL,
  result_json JSONB NOT NULL, error_json JSONB, cancel_requested INT NOT NULL,
  dead_letter INT NOT NULL, created_at_ts BIGINT NOT NULL, started_at_ts BIGINT,
  finished_at_ts BIGINT, updated_at_ts BIGINT NOT NULL, PRIMARY KEY (client_id, job_id));
CREATE TABLE IF NOT EXISTS job_queue (
  lane INT NOT NULL, client_id TEXT COLLATE "C" NOT NULL, job_id TEXT COLLATE "C" NOT NULL,
  kind TEXT NOT NULL, lease_owner TEXT NOT NULL, lease_version BIGINT NOT NULL,
  lease_expires_ts BIGINT NOT NULL, not_before_ts BIGINT NOT NULL, created_at_ts BIGINT NOT NULL,
  PRIMARY KEY (lane, client_id, job_id));
CREATE OR REPLACE FUNCTION soul_job_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('soul_job', NEW.client_id || '/' || NEW.job_id); RETURN NULL; END $$;
CREATE OR REPLACE TRIGGER job_changed AFTER UPDATE ON job
  FOR EACH ROW EXECUTE FUNCTION soul_job_changed();
CREATE OR REPLACE FUNCTION soul_queue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_notify('soul_job', 'queue'); RETURN NULL; END $$;
CREATE OR REPLACE TRIGGER job_queued AFTER INSERT OR DELETE ON job_queue
  FOR EACH ROW EXECUTE FUNCTION soul_queue_changed();
CREATE OR REPLACE TRIGGER job_released AFTER UPDATE ON job_queue
  FOR EACH ROW WHEN (NEW.lease_expires_ts < OLD.lease_expires_ts)
  EXECUTE FUNCTION soul_queue_changed();
""",
)

TERMINAL = ("succeeded", "partial", "failed", "cancelled")
_LIVE_STATUS = f"status NOT IN ({', '.join(repr(s) for s in TERMINAL)})"

JOB_COLUMNS = [
    "client_id",
    "job_id",
    "kind",
    "priority",
    "status",
    "user_id",
    "soul_id",
    "spec_json",
    "webhook_url",
    "attempts",
    "max_attempts",
    "fence",
    "done",
    "total",
    "stage_json",
    "result_json",
    "error_json",
    "cancel_requested",
    "dead_letter",
    "created_at_ts",
    "started_at_ts",
    "finished_at_ts",
    "updated_at_ts",
]
QUEUE_COLUMNS = [
    "lane",
    "client_id",
    "job_id",
    "kind",
    "lease_owner",
    "lease_version",
    "lease_expires_ts",
    "not_before_ts",
    "created_at_ts",
]
_QUEUE_KEY = "lane = ? AND client_id = ? AND job_id = ?"
_JOB_KEY = "client_id = ? AND job_id = ?"


class JobRows(Store):
    ddl = DDL

    async def insert_job(self, job: dict[str, Any]) -> bool:
        """The document, first: a queue row never points at a job that is not there."""
        rows = await self._rows(
            insert_sql("job", JOB_COLUMNS, "ON CONFLICT DO NOTHING RETURNING job_id"),
            [job[c] for c in JOB_COLUMNS],
        )
        return bool(rows)

    def _job_written(self, client_id: str, job_id: str) -> None:
        """After a write of a job's row: a backend whose database tells no one itself (SQLite)
        tells the streams' change feeds here; PostgreSQL's trigger on ``job`` does it
        (``storage/changes.py``)."""

    def _queue_changed(self) -> None:
        """After a queue row was added, released or removed: as ``_job_written``, for the
        leases that wait for a job."""

    async def enqueue_job(self, entry: dict[str, Any]) -> None:
        await self._write(insert_sql("job_queue", QUEUE_COLUMNS), [entry[c] for c in QUEUE_COLUMNS])
        self._queue_changed()

    async def get_job(self, client_id: str, job_id: str) -> Row | None:
        rows = await self._rows(f"SELECT * FROM job WHERE {_JOB_KEY}", (client_id, job_id))
        return rows[0] if rows else None

    async def list_jobs(
        self, client_id: str, before: str | None, filters: dict[str, str], limit: int
    ) -> list[Row]:
        """Newest first: a backwards prefix scan of the client's jobs, filtered as it goes."""
        where = ["client_id = ?"]
        params: list[Any] = [client_id]
        if before is not None:
            where.append("job_id < ?")
            params.append(before)
        for column, value in sorted(filters.items()):
            where.append(f"{column} = ?")
            params.append(value)
        return await self._rows(
            f"SELECT * FROM job WHERE {' AND '.join(where)} ORDER BY job_id DESC LIMIT ?",
            (*params, limit),
        )

    async def count_jobs_since(self, client_id: str, first_job_id: str) -> int:
        """The client's jobs from ``first_job_id`` on (ULIDs sort by time: a recent range)."""
        rows = await self._rows(
            "SELECT count(*) AS n FROM job WHERE client_id = ? AND job_id >= ?",
            (client_id, first_job_id),
        )
        return int(rows[0]["n"])

    async def update_job(
        self, client_id: str, job_id: str, fence: int, changes: dict[str, Any]
    ) -> bool:
        """A worker's write, only while its lease version is the newest that wrote and the job
        is not finished. False: the lease was taken over, or the job ended meanwhile."""
        sets = ", ".join(f"{c} = ?" for c in changes)
        changed = await self._write(
            f"UPDATE job SET {sets}, fence = ? WHERE {_JOB_KEY} AND fence <= ? AND {_LIVE_STATUS}",
            (*changes.values(), fence, client_id, job_id, fence),
        )
        if changed:
            self._job_written(client_id, job_id)
        return changed > 0

    async def set_job_stage(
        self, client_id: str, job_id: str, status: str, stage_json: str, ts: int
    ) -> None:
        """Live progress (stage, denoising step) while the job is still in ``status``:
        advisory, so not fenced."""
        if await self._write(
            f"UPDATE job SET stage_json = ?, updated_at_ts = ? WHERE {_JOB_KEY} AND status = ?",
            (stage_json, ts, client_id, job_id, status),
        ):
            self._job_written(client_id, job_id)

    async def request_cancel(self, client_id: str, job_id: str, ts: int) -> bool:
        changed = await self._write(
            f"UPDATE job SET cancel_requested = 1, updated_at_ts = ? WHERE {_JOB_KEY} "
            f"AND {_LIVE_STATUS}",
            (ts, client_id, job_id),
        )
        if changed:
            self._job_written(client_id, job_id)
        return changed > 0

    # The queue: a lane is a primary-key prefix.
    async def queue_lane(self, lane: int) -> list[Row]:
        return await self._rows(
            "SELECT * FROM job_queue WHERE lane = ? ORDER BY client_id, job_id", (lane,)
        )

    async def client_queue(self, lane: int, client_id: str) -> list[Row]:
        return await self._rows(
            "SELECT * FROM job_queue WHERE lane = ? AND client_id = ? ORDER BY job_id",
            (lane, client_id),
        )

    async def queue_entry(self, lane: int, client_id: str, job_id: str) -> Row | None:
        rows = await self._rows(
            f"SELECT * FROM job_queue WHERE {_QUEUE_KEY}", (lane, client_id, job_id)
        )
        return rows[0] if rows else None

    async def take_lease(self, entry: Row, owner: str, now_ts: int, expires_ts: int) -> int | None:
        """Compare-and-set on the version read: the new version, or None (someone else won)."""
        rows = await self._rows(
            "UPDATE job_queue SET lease_owner = ?, lease_version = lease_version + 1, "
            f"lease_expires_ts = ? WHERE {_QUEUE_KEY} AND lease_version = ? "
            "AND lease_expires_ts <= ? RETURNING lease_version",
            (
                owner,
                expires_ts,
                entry["lane"],
                entry["client_id"],
                entry["job_id"],
                entry["lease_version"],
                now_ts,
            ),
        )
        return int(rows[0]["lease_version"]) if rows else None

    async def renew_lease(self, key: tuple[int, str, str], version: int, expires_ts: int) -> bool:
        changed = await self._write(
            f"UPDATE job_queue SET lease_expires_ts = ? WHERE {_QUEUE_KEY} AND lease_version = ?",
            (expires_ts, *key, version),
        )
        return changed > 0

    async def release_lease(
        self, key: tuple[int, str, str], version: int, not_before_ts: int, owner: str = ""
    ) -> bool:
        """Hand the job back to the queue, to be leased again from ``not_before_ts``; ``owner``
        marks what it is waiting for (nothing: work)."""
        changed = await self._write(
            "UPDATE job_queue SET lease_owner = ?, lease_expires_ts = 0, not_before_ts = ? "
            f"WHERE {_QUEUE_KEY} AND lease_version = ?",
            (owner, not_before_ts, *key, version),
        )
        if changed:
            self._queue_changed()
        return changed > 0

    async def dequeue(self, key: tuple[int, str, str], version: int) -> None:
        if await self._write(
            f"DELETE FROM job_queue WHERE {_QUEUE_KEY} AND lease_version = ?", (*key, version)
        ):
            self._queue_changed()
