"""The jobs facet: the catalog's side of jobs, as clients see them (submit, read, list,
cancel) and as renders report their progress; it mixes in the lease/fence book
(``job_leases``) and the stats (``job_stats``). The records are ``serve_app.jobs.book``'s.

    submit:  the document, then its queue row (a queue row never names a missing job)
    lease:   high lane first; within a lane, round robin between API clients, each client's
             oldest job first; a compare-and-set on the queue row's version is the lease
    work:    every write of a worker is fenced by its lease version; a worker that lost its
             lease (it stalled, its replica died) writes nothing more
    end:     the terminal document first, then (after its webhook) the queue row goes; a job
             whose worker died in between is leased again, seen finished, and concluded
"""

from __future__ import annotations

import json
from typing import Any

from serve_app.catalog.job_leases import JobLeases
from serve_app.catalog.job_slots import claim_slot, over_quota
from serve_app.errors import NoStyle, UnknownSoul
from serve_app.ids import new_ulid, now_ms
from serve_app.jobs.book import (
    CONCLUDING,
    JobDoc,
    Lease,
    Submitted,
    job_doc,
    new_job_row,
    queue_row,
    ulid_floor,
)
from serve_app.jobs.spec import ALL_LANES, LANES
from serve_app.metrics import count


class Jobs(JobLeases):
    async def submit_job(
        self,
        client_id: str,
        spec: dict[str, Any],
        total: int,
        max_attempts: int,
        quota: int,
        rate_per_min: int,
        lane: int | None = None,
        units: int | None = None,
        styled: bool = False,
        ticket: str | None = None,
        stages: dict[str, int] | None = None,
    ) -> Submitted:
        """Queue a job, unless the client is over its quota of unfinished jobs or its rate;
        the quota is decided by claiming one of the client's slots, one conditional insert
        (``catalog/job_slots.py``): two concurrent submits never both take the last one.
        ``ticket``: the job's id from ``admit_job``, its slot claimed already.
        ``lane``: where it queues, if not its priority's (the reserve's refills); ``units``:
        what its estimate counts, to answer the estimate with it (one call, not two);
        ``stages``: what it counts by stage instead (``estimate_stages``);
        ``styled``: the job's soul must have a style (else UnknownSoul or NoStyle, nothing
        written)."""
        if styled:
            await self._styled(spec["soul_id"])
        refused = await self.job_refusal(client_id, quota, rate_per_min)
        if refused is not None:
            return refused
        row = new_job_row(client_id, spec, total, max_attempts, now_ms())
        row["job_id"] = ticket or row["job_id"]
        if not await claim_slot(self.store, client_id, row["job_id"], quota):
            return over_quota(quota)  # a concurrent submit took the last slot first
        await self.store.insert_job(row)
        lane = LANES[row["priority"]] if lane is None else lane
        await self.store.enqueue_job(queue_row(lane, row))
        position = await self._position(lane, row["job_id"])
        estimate = None
        if stages is not None:
            estimate = (await self.estimate_stages(stages, row["soul_id"]))["estimated_s"]
        elif units is not None:
            estimate = (await self.estimate_job(row["kind"], row["soul_id"], units))["estimated_s"]
        return Submitted(doc=job_doc(row), position=position, estimated_s=estimate)

    async def job_refusal(self, client_id: str, quota: int, rate_per_min: int) -> Submitted | None:
        """Why the client may not queue a job now (over its quota of unfinished jobs or its
        rate), or None. Asked alone by a route that writes before it queues its job."""
        unfinished = sum([len(await self._unfinished(other, client_id)) for other in ALL_LANES])
        if unfinished >= quota:
            return Submitted(
                refused=f"queued-job quota: {unfinished} of {quota} unfinished jobs; "
                "wait for some to finish or cancel them",
                retry_after_s=5,
            )
        recent = await self.store.count_jobs_since(client_id, ulid_floor(now_ms() - 60_000))
        if recent >= rate_per_min:
            return Submitted(
                refused=f"submit rate: {recent} jobs in the last minute, {rate_per_min} allowed",
                retry_after_s=10,
            )
        return None

    async def admit_job(self, client_id: str, quota: int, rate_per_min: int) -> Submitted | str:
        """A ticket for a job the caller will submit after writing what it is for: the job's
        id, its quota slot claimed (the check and the claim one conditional insert); or why
        the client may not queue a job now."""
        refused = await self.job_refusal(client_id, quota, rate_per_min)
        if refused is not None:
            return refused
        ticket = new_ulid()
        if not await claim_slot(self.store, client_id, ticket, quota):
            return over_quota(quota)
        return ticket

    async def release_job_slot(self, client_id: str, ticket: str) -> None:
        """Give back the slot of a ticket whose job will not be submitted."""
        for row in await self.store.job_slots(client_id):
            if row["job_id"] == ticket:
                await self.store.free_job_slot(client_id, row["slot"], ticket)

    async def _styled(self, soul_id: str) -> None:
        if await self.store.get_style(soul_id) is None:
            if await self.store.get_soul(soul_id) is None:
                raise UnknownSoul(soul_id)
            raise NoStyle(soul_id)

    async def get_job(self, client_id: str, job_id: str) -> JobDoc | None:
        row = await self.store.get_job(client_id, job_id)
        return job_doc(row) if row else None

    async def list_jobs(
        self, client_id: str, filters: dict[str, str], after: str | None, limit: int
    ) -> list[JobDoc]:
        """Newest first; ``after`` is the last job id of the previous page."""
        return [job_doc(r) for r in await self.store.list_jobs(client_id, after, filters, limit)]

    async def cancel_job(self, client_id: str, job_id: str) -> JobDoc | None:
        """Ask a job to stop. A queued one is cancelled here and now (its queue row stays, so a
        worker sends its webhook and clears it); a running one stops at its worker's next check."""
        doc = await self.get_job(client_id, job_id)
        if doc is None or doc.finished:
            return doc
        ts = now_ms()
        await self.store.request_cancel(client_id, job_id, ts)
        lane = LANES[doc.priority]  # a refill (its own lane) is never cancelled by a client
        entry = await self.store.queue_entry(lane, client_id, job_id)
        if entry is not None and entry["lease_expires_ts"] <= ts:
            version = await self.store.take_lease(entry, "cancel", ts, ts + 60_000)
            if version is not None:
                lease = Lease(lane, client_id, job_id, version)
                if await self.finish_job(lease, "cancelled", None, None):
                    count("soul_jobs", kind=doc.kind, status="cancelled")
                await self.store.release_lease(lease.key, version, 0, owner=CONCLUDING)
        return await self.get_job(client_id, job_id)

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
