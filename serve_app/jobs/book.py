"""The job book's records: a job's document as a client reads it (``JobDoc``, with its
progress, outcome and error), the rows a submit writes, and a worker's lease. The catalog's job
facets (``serve_app.catalog.jobs``, ``job_leases``, ``job_stats``) write and read them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from serve_app.ids import new_ulid
from serve_app.jobs.spec import Priority
from serve_app.schemas import KeyLookup
from serve_app.storage.tables.jobs import TERMINAL

Status = Literal["queued", "running", "succeeded", "partial", "failed", "cancelled"]
CONCLUDING = "concluding"  # the lease owner of a queue row whose job ended (cancelled queued)


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


class Looked(BaseModel):
    """An image job's lookup of its item, made by the catalog as it first leases the job, so
    that a hit's claim rides with the lease (``catalog/job_leases.py``)."""

    lookup: KeyLookup | None = Field(
        description="What the lookup found (on a hit, the variant it claimed); None: it broke "
        "off, and whether it claimed is unknown, so the worker recovers the item first."
    )


class Leased(BaseModel):
    lease_lane: int
    lease_version: int
    doc: JobDoc
    looked: Looked | None = None

    @property
    def lease(self) -> Lease:
        return Lease(self.lease_lane, self.doc.client_id, self.doc.job_id, self.lease_version)


class Submitted(BaseModel):
    """The new job (or None) and, when refused, which limit and when to retry."""

    doc: JobDoc | None = None
    position: int = 0
    estimated_s: float | None = None
    refused: str | None = None
    retry_after_s: float | None = None


def item_ref(client_id: str, job_id: str, index: int) -> str:
    """A job item's reference (``client/job/index``): claims and progress carry it."""
    return f"{client_id}/{job_id}/{index}"


def new_job_row(
    client_id: str, spec: dict[str, Any], total: int, max_attempts: int, ts: int
) -> dict[str, Any]:
    """The ``job`` row of a job just submitted: queued, no attempt yet, every item pending."""
    return {
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


def queue_row(lane: int, job: Mapping[str, Any]) -> dict[str, Any]:
    """The ``job_queue`` row of a job just submitted: free to lease at once."""
    return {
        "lane": lane,
        "client_id": job["client_id"],
        "job_id": job["job_id"],
        "kind": job["kind"],
        "lease_owner": "",
        "lease_version": 0,
        "lease_expires_ts": 0,
        "not_before_ts": 0,
        "created_at_ts": job["created_at_ts"],
    }


def job_doc(row: Mapping[str, Any]) -> JobDoc:
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
