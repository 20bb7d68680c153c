"""The job book's leases: how a worker takes a job, keeps it, writes to it and lets it go.

A lease is a compare-and-set on the queue row's version; every write of the worker to the job's
document is fenced by that version, so a worker that lost its lease (it stalled, its replica
died) writes nothing more. A lease runs out by itself: a dead worker's job is leased again.

An idle worker's lease waits here, in the catalog, instead of polling:

    watch:   first the replica's change feed for ``QUEUE`` (a queue row added, released or
             removed, by any replica: ``storage/changes.py``), then a look at the lanes, so a
             job queued between the look and the wait is not missed
    wait:    until that notice, or the moment the earliest job not free now becomes free (a
             retry's backoff, a lease running out), or the call's bound ``wait_s``
    again:   look again after a notice or at the due moment; a job is leased at once, or
             nothing after ``wait_s`` (one look per idle call)
    cancel:  the waiting is cancellable (a stopping worker drops its call); a look that
             leased as the cancel came hands the job back, so no lease is stranded

The first lease of a job of a kind that asks for it (``JobKind.lease_lookup``: an image job)
also looks its one item up, and so claims it on a hit (``Looked``): the worker's hit path is
then the lease and the end, with no call of its own between them. The claim carries the item's
reference, so a worker that dies holding it (or a lease handed back) leaves a claim that the
next attempt recovers, as it recovers any; a lookup that breaks off is left to the worker,
which looks for its claim first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Collection, Mapping
from typing import Any

from serve_app.catalog.job_stats import JobStats, Run
from serve_app.delivery.results import tenant_user
from serve_app.ids import now_ms
from serve_app.jobs.book import (
    JobDoc,
    JobError,
    Lease,
    Leased,
    Looked,
    Outcome,
    Progress,
    Status,
    item_ref,
    job_doc,
)
from serve_app.jobs.spec import LANES, RESERVE_LANE
from serve_app.metrics import gauge
from serve_app.storage.changes import QUEUE, ChangeFeed


class JobLeases(JobStats):
    def __init__(self) -> None:
        super().__init__()
        self._next_after: dict[int, str] = {}  # lane -> the client served last (round robin)
        self.changes: ChangeFeed | None = None  # the replica's feed, for waiting leases

    async def lease_job(
        self,
        owner: str,
        lease_ms: int,
        refills: bool = True,
        wait_s: float = 0,
        lookups: Collection[str] = (),
    ) -> Leased | None:
        """The next job to work on, leased to ``owner`` and marked running (attempts + 1); a job
        found finished (its worker died before clearing it) comes back as it is, to conclude.
        ``refills``: the reserve lane too (after every user's job, and only while fewer than
        ``reserve.max_running`` refills run). ``wait_s``: while there is nothing to lease, wait
        up to this long for a job (woken by the change feed; without one, only by the clock).
        ``lookups``: the kinds whose one item (the spec's ``cue`` for its ``user_id``) the first
        lease looks up, and so claims on a hit (``Leased.looked``)."""
        if wait_s <= 0:
            return (await self._lease_now(owner, lease_ms, refills, lookups))[0]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        no_feed = contextlib.nullcontext(asyncio.Event())  # nothing sets it: the clock only
        async with self.changes.watch(QUEUE) if self.changes else no_feed as queued:
            while True:
                queued.clear()  # before the look: a notice during it ends the wait at once
                leased, due_ts = await self._lease_or_hand_back(owner, lease_ms, refills, lookups)
                left_s = deadline - loop.time()
                if leased is not None or left_s <= 0:
                    return leased
                if due_ts is not None:
                    left_s = min(left_s, max(0.0, (due_ts - now_ms()) / 1000))
                try:  # not wait_for: on 3.11 it drops a cancel that comes with the notice
                    async with asyncio.timeout(left_s):
                        await queued.wait()
                except TimeoutError:
                    if loop.time() >= deadline:
                        return None  # no notice came: nothing to look at again

    async def _lease_or_hand_back(
        self, owner: str, lease_ms: int, refills: bool, lookups: Collection[str]
    ) -> tuple[Leased | None, int | None]:
        """``_lease_now``, run to its end even if the call is cancelled meanwhile."""
        look = asyncio.ensure_future(self._lease_now(owner, lease_ms, refills, lookups))
        try:
            return await asyncio.shield(look)
        except asyncio.CancelledError:
            leased, _ = await look
            if leased is not None:  # its caller is gone: the job goes back to the queue now
                await self.hand_back(leased.lease)
            raise

    async def _lease_now(
        self, owner: str, lease_ms: int, refills: bool, lookups: Collection[str] = ()
    ) -> tuple[Leased | None, int | None]:
        """A job leased now, or None and when the earliest job seen not free becomes free."""
        lanes = [*sorted(LANES.items(), key=lambda p: p[1]), ("reserve", RESERVE_LANE)]
        later: list[int] = []  # when the jobs not free now become free
        for priority, lane in lanes if refills else lanes[:-1]:
            ts = now_ms()
            entries = await self.store.queue_lane(lane)
            free = [e for e in entries if e["lease_expires_ts"] <= ts and e["not_before_ts"] <= ts]
            gauge("soul_job_queue_depth", len(free), priority=priority)
            later += [
                t for e in entries if (t := max(e["lease_expires_ts"], e["not_before_ts"])) > ts
            ]
            running = sum(1 for e in entries if e["lease_expires_ts"] > ts)
            if lane == RESERVE_LANE and running >= self.config.reserve.max_running:
                continue
            for entry in self._round_robin(lane, free):
                version = await self.store.take_lease(entry, owner, ts, ts + lease_ms)
                if version is None:
                    continue  # another worker took it first
                self._next_after[lane] = entry["client_id"]
                lease = Lease(lane, entry["client_id"], entry["job_id"], version)
                leased = await self._start(lease, lookups)
                if leased is not None:
                    return leased, None
        return None, min(later, default=None)

    def _round_robin(self, lane: int, free: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Each client's oldest free job, clients in turn after the one served last."""
        oldest: dict[str, Mapping[str, Any]] = {}
        for entry in free:  # ordered by (client_id, job_id)
            oldest.setdefault(entry["client_id"], entry)
        clients = sorted(oldest)
        last = self._next_after.get(lane, "")
        turn = [c for c in clients if c > last] + [c for c in clients if c <= last]
        return [oldest[c] for c in turn]

    async def _start(self, lease: Lease, lookups: Collection[str] = ()) -> Leased | None:
        row = await self.store.get_job(lease.client_id, lease.job_id)
        if row is None:  # a queue row whose document never got written: drop it
            await self.store.dequeue(lease.key, lease.version)
            return None
        doc = job_doc(row)
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
        first = lease.version == 1 and doc.kind in lookups
        looked = await self._looked_up(doc) if first else None
        return Leased(lease_lane=lease.lane, lease_version=lease.version, doc=doc, looked=looked)

    async def _looked_up(self, doc: JobDoc) -> Looked | None:
        """The job's one item looked up (and claimed, on a hit) for its worker; None: it is not
        pending, or the soul is unknown (the worker's own lookup says so)."""
        if doc.finished or doc.outcome.items != [None]:
            return None
        user = tenant_user(doc.client_id, doc.user_id)
        ref = item_ref(doc.client_id, doc.job_id, 0)
        try:
            lookup = await self.lookup(  # type: ignore[attr-defined]  # the keys facet's
                doc.soul_id, doc.spec["cue"], user, ref, doc.spec.get("identity_version")
            )
        except Exception:  # a refused pin, the store: the worker meets it again, recovering
            return Looked(lookup=None)
        return None if lookup is None else Looked(lookup=lookup)

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

    async def finish_job(
        self,
        lease: Lease,
        status: Status,
        outcome: Outcome | None,
        error: JobError | None,
        dead_letter: bool = False,
        conclude: bool = False,
    ) -> bool:
        """The terminal document; ``conclude``: then the job leaves the queue too (it has no
        webhook to send in between)."""
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
            self._ran(_run_of(row, ts))
        if written and conclude:
            await self.conclude_job(lease)
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


def _run_of(row: Mapping[str, Any], finished_ts: int) -> Run:
    return Run(
        finished_ts=finished_ts,
        kind=row["kind"],
        soul_id=row["soul_id"],
        wait_ms=row["started_at_ts"] - row["created_at_ts"],
        run_ms=finished_ts - row["started_at_ts"],
        items=row["total"],
    )
