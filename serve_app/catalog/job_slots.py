"""The queued-job quota as slots (``storage/tables/job_slots.py``): the check and the write
that admits a job are one conditional insert, so two concurrent submits never both take a
client's last free slot (a count of unfinished jobs, then an insert, let both pass).

    claim    slot 0..quota-1 in turn: a free slot is taken by ``INSERT … ON CONFLICT DO
             NOTHING``; a lost race for it moves on to the next; a slot whose job has finished
             (or was never written, ``GRACE_MS`` after the claim) is given up by a delete
             conditional on that job, then claimed like a free one
    ticket   a route that writes before it queues its job (``assets:generate``) claims the
             slot first, for the job id it will submit (``admit_job``): over the quota it is
             refused before anything is written; ``submit_job`` with that id finds its slot
             held already; a route that fails in between gives the slot back
             (``release_job_slot``); the jobs facet (``catalog/jobs.py``) does all three
    release  nothing else frees a slot: a finished job's slot is free for the next claim
"""

from __future__ import annotations

from typing import Any

from serve_app.ids import now_ms
from serve_app.jobs.book import Submitted
from serve_app.storage.tables import CatalogStore
from serve_app.storage.tables.jobs import TERMINAL

GRACE_MS = 60_000  # a slot claimed for a job that is not written yet stays held this long


async def claim_slot(store: CatalogStore, client_id: str, job_id: str, quota: int) -> bool:
    """One of the client's ``quota`` slots for ``job_id`` (True also when it holds one
    already); False when every one is held by an unfinished job."""
    held = {row["slot"]: row for row in await store.job_slots(client_id)}
    if any(row["job_id"] == job_id for row in held.values()):
        return True
    for slot in range(quota):
        row = held.get(slot)
        if row is not None:
            if await _holds(store, row):
                continue
            await store.free_job_slot(client_id, slot, row["job_id"])
        if await store.claim_job_slot(client_id, slot, job_id, now_ms()):
            return True
    return False


async def _holds(store: CatalogStore, slot: Any) -> bool:
    job = await store.get_job(slot["client_id"], slot["job_id"])
    if job is None:
        return bool(now_ms() - slot["claimed_at_ts"] < GRACE_MS)
    return job["status"] not in TERMINAL


def over_quota(quota: int) -> Submitted:
    return Submitted(
        refused=f"queued-job quota: {quota} of {quota} unfinished jobs; "
        "wait for some to finish or cancel them",
        retry_after_s=5,
    )
