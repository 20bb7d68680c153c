"""The job book: the catalog's side of jobs (part of the Catalog deployment, next to the store).

    submit:  the document, then its queue row (a queue row never names a missing job)
    lease:   high lane first; within a lane, round robin between API clients, each client's
             oldest job first; a compare-and-set on the queue row's version is the lease
    work:    every write of a worker is fenced by its lease version; a worker that lost its
             lease (it stalled, its replica died) writes nothing more
    end:     the terminal document first, then (after its webhook) the queue row goes; a job
             whose worker died in between is leased again, seen finished, and concluded

A lease runs out by itself (``lease_expires_ts``): a dead worker's job is leased again.
"""

from __future__ import annotations

import json
import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve_app.ids import new_ulid, now_ms
from serve_app.jobs.spec import LANES, Priority
from serve_app.metrics import count, gauge
from serve_app.storage.jobs import TERMINAL
from serve_app.storage.store import Store

Status = Literal["queued", "running", "succeeded", "partial", "failed", "cancelled"]
WORKER_LOCK = "worker:"
CONCLUDING = "concluding"  # the lease owner of a queue row whose job ended (cancelled queued)
RECENT_RUNS = 500


class Progress(BaseModel):
    done: int = 0
    total: int = 1
    stage: str = "queued"
    step: int | None = Field(default=None, description="Denoising step of the current render.")
    steps: int | None = None
    item: int | None = Field(default=None, description="Index of the item at that stage.")


class JobError(BaseModel):
    type: str
    detail: str


class ItemFailure(BaseModel):
    index: int
    error: JobError


class Outcome(BaseModel):
    """What a job delivered so far: ``items[i]`` is item i's ``Delivery`` (as JSON), or None.
    ``resume``: where a job that works in steps of its own (a key rebuild) goes on after a
    retry; such a job reports its progress in its own units too."""

    items: list[dict[str, Any] | None]
    failed: list[ItemFailure] = Field(default_factory=list)
    resume: dict[str, Any] | None = None

    @property
    def delivered(self) -> int:
        return sum(1 for item in self.items if item is not None)

    @property
    def done(self) -> int:
        """Items that ended, delivered or failed."""
        return self.delivered + len(self.failed)


class JobDoc(BaseModel):
    client_id: str
    job_id: str
    kind: str
    priority: Priority
    status: Status
    user_id: str
    soul_id: str
    spec: dict[str, Any]
    webhook_url: str | None
    attempts: int
    max_attempts: int
    progress: Progress
    outcome: Outcome
    error: JobError | None
    cancel_requested: bool
    dead_letter: bool
    created_at_ts: int
    started_at_ts: int | None
    finished_at_ts: int | None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class Lease:
    lane: int
    client_id: str
    job_id: str
    version: int

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.lane, self.client_id, self.job_id)


class Leased(BaseModel):
    lease_lane: int
    lease_version: int
    doc: JobDoc

    @property
    def lease(self) -> Lease:
        return Lease(self.lease_lane, self.doc.client_id, self.doc.job_id, self.lease_version)


class Submitted(BaseModel):
    """The new job (or None) and, when refused, which limit and when to retry."""

    doc: JobDoc | None = None
    position: int = 0
    refused: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True)
class _Run:
    finished_ts: int
    kind: str
    soul_id: str
    wait_ms: int
    run_ms: int
    items: int


def _doc(row: Mapping[str, Any]) -> JobDoc:
    stage = json.loads(row["stage_json"])
    return JobDoc(
        client_id=row["client_id"],
        job_id=row["job_id"],
        kind=row["kind"],
        priority=row["priority"],
        status=row["status"],
        user_id=row["user_id"],
        soul_id=row["soul_id"],
        spec=json.loads(row["spec_json"]),
        webhook_url=row["webhook_url"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        progress=Progress(done=row["done"], total=row["total"], **stage),
        outcome=Outcome.model_validate_json(row["result_json"]),
        error=JobError.model_validate_json(row["error_json"]) if row["error_json"] else None,
        cancel_requested=bool(row["cancel_requested"]),
        dead_letter=bool(row["dead_letter"]),
        created_at_ts=row["created_at_ts"],
        started_at_ts=row["started_at_ts"],
        finished_at_ts=row["finished_at_ts"],
    )


def ulid_floor(ts_ms: int) -> str:
    """The smallest ULID of a millisecond: job ids at or after ``ts_ms`` sort at or above it."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    chars = []
    for _ in range(10):
        ts_ms, digit = divmod(ts_ms, 32)
        chars.append(alphabet[digit])
    return "".join(reversed(chars)) + "0" * 16


class JobBook:
    """Mixed into the catalog engine, which owns ``store``."""

    store: Store

    def __init__(self) -> None:
        self._next_after: dict[int, str] = {}  # lane -> the client served last (round robin)
        self._recent: deque[_Run] = deque(maxlen=RECENT_RUNS)

    # ---- clients ----------------------------------------------------------------------------
    async def submit_job(
        self,
        client_id: str,
        spec: dict[str, Any],
        total: int,
        max_attempts: int,
        quota: int,
        rate_per_min: int,
    ) -> Submitted:
        """Queue a job, unless the client is over its quota of unfinished jobs or its rate."""
        ts = now_ms()
        unfinished = sum([len(await self._unfinished(lane, client_id)) for lane in LANES.values()])
        if unfinished >= quota:
            return Submitted(
                refused=f"queued-job quota: {unfinished} of {quota} unfinished jobs; "
                "wait for some to finish or cancel them",
                retry_after_s=5,
            )
        recent = await self.store.count_jobs_since(client_id, ulid_floor(ts - 60_000))
        if recent >= rate_per_min:
            return Submitted(
                refused=f"submit rate: {recent} jobs in the last minute, {rate_per_min} allowed",
                retry_after_s=10,
            )
        row = {
            "client_id": client_id,
            "job_id": new_ulid(),
            "kind": spec["kind"],
            "priority": spec.get("priority", "normal"),
            "status": "queued",
            "user_id": spec.get("user_id", ""),
            "soul_id": spec["soul_id"],
            "spec_json": json.dumps(spec, sort_keys=True),
            "webhook_url": spec.get("webhook_url"),
            "attempts": 0,
            "max_attempts": max_attempts,
            "fence": 0,
            "done": 0,
            "total": total,
            "stage_json": json.dumps({"stage": "queued"}),
            "result_json": Outcome(items=[None] * total).model_dump_json(),
            "error_json": None,
            "cancel_requested": 0,
            "dead_letter": 0,
            "created_at_ts": ts,
            "started_at_ts": None,
            "finished_at_ts": None,
            "updated_at_ts": ts,
        }
        await self.store.insert_job(row)
        lane = LANES[row["priority"]]
        await self.store.enqueue_job(
            {
                "lane": lane,
                "client_id": client_id,
                "job_id": row["job_id"],
                "kind": row["kind"],
                "lease_owner": "",
                "lease_version": 0,
                "lease_expires_ts": 0,
                "not_before_ts": 0,
                "created_at_ts": ts,
            }
        )
        return Submitted(doc=_doc(row), position=await self._position(lane, row["job_id"]))

    async def get_job(self, client_id: str, job_id: str) -> JobDoc | None:
        row = await self.store.get_job(client_id, job_id)
        return _doc(row) if row else None

    async def list_jobs(
        self, client_id: str, filters: dict[str, str], after: str | None, limit: int
    ) -> list[JobDoc]:
        """Newest first; ``after`` is the last job id of the previous page."""
        return [_doc(r) for r in await self.store.list_jobs(client_id, after, filters, limit)]

    async def cancel_job(self, client_id: str, job_id: str) -> JobDoc | None:
        """Ask a job to stop. A queued one is cancelled here and now (its queue row stays, so a
        worker sends its webhook and clears it); a running one stops at its worker's next check."""
        doc = await self.get_job(client_id, job_id)
        if doc is None or doc.finished:
            return doc
        ts = now_ms()
        await self.store.request_cancel(client_id, job_id, ts)
        lane = LANES[doc.priority]
        entry = await self.store.queue_entry(lane, client_id, job_id)
        if entry is not None and entry["lease_expires_ts"] <= ts:
            version = await self.store.take_lease(entry, "cancel", ts, ts + 60_000)
            if version is not None:
                lease = Lease(lane, client_id, job_id, version)
                if await self.finish_job(lease, "cancelled", None, None):
                    count("soul_jobs", kind=doc.kind, status="cancelled")
                await self.store.release_lease(lease.key, version, 0, owner=CONCLUDING)
        return await self.get_job(client_id, job_id)

    # ---- workers ----------------------------------------------------------------------------
    async def lease_job(self, owner: str, lease_ms: int) -> Leased | None:
        """The next job to work on, leased to ``owner`` and marked running (attempts + 1); a job
        found finished (its worker died before clearing it) comes back as it is, to conclude."""
        for priority, lane in sorted(LANES.items(), key=lambda p: p[1]):
            ts = now_ms()
            free = [
                e
                for e in await self.store.queue_lane(lane)
                if e["lease_expires_ts"] <= ts and e["not_before_ts"] <= ts
            ]
            gauge("soul_job_queue_depth", len(free), priority=priority)
            for entry in self._round_robin(lane, free):
                version = await self.store.take_lease(entry, owner, ts, ts + lease_ms)
                if version is None:
                    continue  # another worker took it first
                self._next_after[lane] = entry["client_id"]
                leased = await self._start(
                    Lease(lane, entry["client_id"], entry["job_id"], version)
                )
                if leased is not None:
                    return leased
        return None

    def _round_robin(self, lane: int, free: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Each client's oldest free job, clients in turn after the one served last."""
        oldest: dict[str, Mapping[str, Any]] = {}
        for entry in free:  # ordered by (client_id, job_id)
            oldest.setdefault(entry["client_id"], entry)
        clients = sorted(oldest)
        last = self._next_after.get(lane, "")
        turn = [c for c in clients if c > last] + [c for c in clients if c <= last]
        return [oldest[c] for c in turn]

    async def _start(self, lease: Lease) -> Leased | None:
        row = await self.store.get_job(lease.client_id, lease.job_id)
        if row is None:  # a queue row whose document never got written: drop it
            await self.store.dequeue(lease.key, lease.version)
            return None
        doc = _doc(row)
        if not doc.finished:
            ts = now_ms()
            changes = {
                "status": "running",
                "attempts": doc.attempts + 1,
                "started_at_ts": doc.started_at_ts or ts,
                "stage_json": json.dumps({"stage": "starting"}),
                "updated_at_ts": ts,
            }
            if not await self.store.update_job(
                lease.client_id, lease.job_id, lease.version, changes
            ):
                return None
            doc = doc.model_copy(
                update={
                    "status": "running",
                    "attempts": doc.attempts + 1,
                    "started_at_ts": changes["started_at_ts"],
                }
            )
        return Leased(lease_lane=lease.lane, lease_version=lease.version, doc=doc)

    async def renew_job(self, lease: Lease, lease_ms: int) -> bool:
        """Keep the lease; False: it was lost (expired and taken by another worker)."""
        return await self.store.renew_lease(lease.key, lease.version, now_ms() + lease_ms)

    async def cancel_requested(self, lease: Lease) -> bool:
        row = await self.store.get_job(lease.client_id, lease.job_id)
        return row is None or bool(row["cancel_requested"])

    async def save_outcome(
        self, lease: Lease, outcome: Outcome, progress: Progress | None = None
    ) -> bool:
        """An item (or a step) finished: it is kept, so a retry of the job goes on from here.
        ``progress``: where a job counting in its own units stands (else: items done)."""
        changes: dict[str, Any] = {
            "done": outcome.done,
            "result_json": outcome.model_dump_json(),
            "updated_at_ts": now_ms(),
        }
        if progress is not None:
            changes["done"], changes["total"] = progress.done, progress.total
            changes["stage_json"] = progress.model_dump_json(include={"stage", "step", "steps"})
        return await self.store.update_job(lease.client_id, lease.job_id, lease.version, changes)

    async def job_progress(
        self, refs: list[str], stage: str, step: int | None = None, steps: int | None = None
    ) -> None:
        """Live progress of the job items ``refs`` (``client/job/index``) name. A render's last
        report may land after its job was cancelled: it says the step the render stopped at."""
        for ref in dict.fromkeys(refs):
            client_id, job_id, index = ref.split("/")
            row = await self.store.get_job(client_id, job_id)
            status = row["status"] if row else None
            if status == "cancelled" and step is not None:
                stage = "cancelled"
            elif status != "running":
                continue
            stage_json = json.dumps(
                {"stage": stage, "step": step, "steps": steps, "item": int(index)}
            )
            await self.store.set_job_stage(client_id, job_id, status, stage_json, now_ms())

    async def finish_job(
        self,
        lease: Lease,
        status: Status,
        outcome: Outcome | None,
        error: JobError | None,
        dead_letter: bool = False,
    ) -> bool:
        ts = now_ms()
        row = await self.store.get_job(lease.client_id, lease.job_id)
        if row is None:
            return False
        # A cancelled job keeps the denoising step it stopped at.
        last = json.loads(row["stage_json"]) if status == "cancelled" else {}
        changes: dict[str, Any] = {
            "status": status,
            "finished_at_ts": ts,
            "updated_at_ts": ts,
            "stage_json": json.dumps({**last, "stage": status}),
            "error_json": error.model_dump_json() if error else None,
            "dead_letter": int(dead_letter),
        }
        if outcome is not None:
            changes["result_json"] = outcome.model_dump_json()
            if outcome.resume is None:  # else the job's last progress in its units stands
                changes["done"] = outcome.done
        written = await self.store.update_job(lease.client_id, lease.job_id, lease.version, changes)
        if written and status != "cancelled" and row["started_at_ts"] is not None:
            self._recent.append(
                _Run(
                    finished_ts=ts,
                    kind=row["kind"],
                    soul_id=row["soul_id"],
                    wait_ms=row["started_at_ts"] - row["created_at_ts"],
                    run_ms=ts - row["started_at_ts"],
                    items=row["total"],
                )
            )
        return written

    async def retry_job(self, lease: Lease, error: JobError, delay_ms: int) -> bool:
        """Back to the queue after a transient failure, leasable again after ``delay_ms``."""
        changes = {
            "status": "queued",
            "error_json": error.model_dump_json(),
            "stage_json": json.dumps({"stage": "retrying"}),
            "updated_at_ts": now_ms(),
        }
        if not await self.store.update_job(lease.client_id, lease.job_id, lease.version, changes):
            return False
        return await self.store.release_lease(lease.key, lease.version, now_ms() + delay_ms)

    async def hand_back(self, lease: Lease) -> bool:
        """A stopping worker returns its job at once; the attempt it used is given back too."""
        row = await self.store.get_job(lease.client_id, lease.job_id)
        if row is not None and row["status"] == "running":
            changes = {
                "status": "queued",
                "attempts": max(0, row["attempts"] - 1),
                "stage_json": json.dumps({"stage": "queued"}),
                "updated_at_ts": now_ms(),
            }
            await self.store.update_job(lease.client_id, lease.job_id, lease.version, changes)
        return await self.store.release_lease(lease.key, lease.version, 0)

    async def conclude_job(self, lease: Lease) -> None:
        """The job is finished and its webhook sent: it leaves the queue."""
        await self.store.dequeue(lease.key, lease.version)

    async def worker_alive(self, owner: str, ttl_ms: int) -> None:
        await self.store.try_lock(f"{WORKER_LOCK}{owner}", owner, now_ms(), ttl_ms)

    async def worker_gone(self, owner: str) -> None:
        await self.store.unlock(f"{WORKER_LOCK}{owner}", owner)

    # ---- the queue at a glance --------------------------------------------------------------
    async def _unfinished(self, lane: int, client_id: str | None = None) -> list[Mapping[str, Any]]:
        """The lane's rows (or one client's) but those of jobs that ended and wait to be
        concluded by a worker."""
        rows = await (
            self.store.queue_lane(lane)
            if client_id is None
            else self.store.client_queue(lane, client_id)
        )
        return [r for r in rows if r["lease_owner"] != CONCLUDING]

    async def _position(self, lane: int, job_id: str) -> int:
        """Jobs ahead of this one: unfinished jobs of higher lanes, and older ones of its own."""
        ahead = 0
        for other in sorted(LANES.values()):
            entries = await self._unfinished(other)
            if other < lane:
                ahead += len(entries)
            elif other == lane:
                ahead += sum(1 for e in entries if e["job_id"] < job_id)
        return ahead

    async def job_backlog(self) -> dict[str, float]:
        """Jobs waiting (to be leased, or out their backoff) and jobs leased, for autoscaling."""
        ts = now_ms()
        entries = [e for lane in LANES.values() for e in await self._unfinished(lane)]
        running = sum(1 for e in entries if e["lease_expires_ts"] > ts)
        return {"queued_jobs": float(len(entries) - running), "running_jobs": float(running)}

    async def job_stats(self, window_s: float = 900) -> dict[str, Any]:
        ts = now_ms()
        lanes = {lane: await self._unfinished(lane) for lane in LANES.values()}
        names = {lane: name for name, lane in LANES.items()}
        queued: dict[str, dict[str, int]] = {}
        running: dict[str, dict[str, int]] = {}
        oldest_ms = 0
        for lane, entries in lanes.items():
            for e in entries:
                leased = e["lease_expires_ts"] > ts
                bucket = running if leased else queued
                by_priority = bucket.setdefault(e["kind"], {})
                by_priority[names[lane]] = by_priority.get(names[lane], 0) + 1
                if not leased:
                    oldest_ms = max(oldest_ms, ts - e["created_at_ts"])
        recent = [r for r in self._recent if r.finished_ts >= ts - window_s * 1000]
        return {
            "queued": queued,
            "running": running,
            "oldest_queued_s": oldest_ms / 1000,
            "window_s": window_s,
            "finished_in_window": len(recent),
            "wait_s": _percentiles([r.wait_ms for r in recent]),
            "run_s": _percentiles([r.run_ms for r in recent]),
            "workers_alive": len(await self.store.live_locks(WORKER_LOCK, ts)),
        }

    async def estimate_job(self, kind: str, soul_id: str | None, count: int) -> dict[str, Any]:
        """Seconds a job submitted now would take: the queue ahead shared by the live workers,
        then its own run, both from measured recent run times (per item, by kind and soul)."""
        per_item = self._per_item_s(kind, soul_id)
        if per_item is None:
            return {"estimated_s": None, "basis": f"no {kind} job finished recently to measure"}
        ts = now_ms()
        ahead = sum(
            [len(await self._unfinished(lane)) for lane in LANES.values()]
        )  # every unfinished job, as an item each: a floor
        workers = max(1, len(await self.store.live_locks(WORKER_LOCK, ts)))
        queue_s = ahead * (self._per_item_s(None, None) or per_item) / workers
        return {
            "estimated_s": round(queue_s + per_item * count, 3),
            "queue_ahead": ahead,
            "workers_alive": workers,
            "per_item_s": round(per_item, 3),
        }

    def _per_item_s(self, kind: str | None, soul_id: str | None) -> float | None:
        runs = [
            r.run_ms / max(1, r.items)
            for r in self._recent
            if (kind is None or r.kind == kind) and (soul_id is None or r.soul_id == soul_id)
        ]
        if not runs and soul_id is not None:
            return self._per_item_s(kind, None)
        return statistics.median(runs) / 1000 if runs else None


def _percentiles(values_ms: list[int]) -> dict[str, float | None]:
    if not values_ms:
        return {"p50": None, "p95": None}
    ordered = sorted(values_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # noqa: E731
    return {"p50": pick(0.5), "p95": pick(0.95)}
