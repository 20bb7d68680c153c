"""The job worker's engine: lease a job, deliver its items with the ``Deliverer``, end it.

    slot:     lease (high lane first, fair between clients) → work → again; idle: poll
    work:     deliver each item not yet delivered (a retry goes on where the last attempt
              stopped; an item whose claim was made but not recorded is recovered, not redone;
              a key rebuild goes through its pages instead, ``jobs/rebuild.py``), while a
              watcher renews the lease and checks for a cancel
    end:      succeeded / partial / failed (permanent errors at once; transient ones retried
              with backoff up to max_attempts, then a dead letter) / cancelled; then the webhook,
              then the job leaves the queue
    stop:     a stopping replica hands back what it holds at once (the lease is released)

Every write is fenced by the lease version: a worker that lost its lease stops writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from serve_app.delivery import Deliverer, Delivery, tenant_user
from serve_app.delivery.coalesce import WorkInterrupted
from serve_app.errors import ServiceError, first_line, root_cause
from serve_app.ids import new_ulid, now_ms
from serve_app.jobs.book import (
    ItemFailure,
    JobDoc,
    JobError,
    Lease,
    Leased,
    Outcome,
    Progress,
    Status,
)
from serve_app.jobs.rebuild import KeyRebuild
from serve_app.jobs.spec import AnyJob, ImageJob, Item, PackJob, RebuildKeysJob, SelfieJob, items
from serve_app.metrics import count, observe

log = logging.getLogger("ray.serve")
SPEC: TypeAdapter[ImageJob | SelfieJob | PackJob | RebuildKeysJob] = TypeAdapter(AnyJob)


class JobWorkerConfig(BaseModel):
    """The JobWorker's live config (``AppArgs.worker``)."""

    model_config = ConfigDict(extra="forbid")

    slots: int = Field(default=2, ge=1, le=64, description="Jobs one replica works on at once.")
    lease_s: float = Field(
        default=30,
        gt=0,
        description="How long a lease lasts unless renewed (every third of it): the longest a "
        "dead worker's job waits before another worker takes it.",
    )
    poll_s: float = Field(default=0.5, gt=0, description="Idle wait between lease attempts.")
    watch_s: float = Field(
        default=0.25, gt=0, description="How often a running job is checked for a cancel."
    )
    backoff_s: float = Field(
        default=1, gt=0, description="First retry delay; doubles per attempt, with jitter."
    )
    backoff_max_s: float = Field(default=60, gt=0, description="Longest retry delay.")
    webhook_attempts: int = Field(default=5, ge=1, le=20, description="Tries per webhook.")


class LeaseLost(Exception):
    """Another worker holds the job now: this one must write nothing more."""


@dataclass
class Ended:
    status: Status
    outcome: Outcome | None
    error: JobError | None = None
    dead_letter: bool = False


def job_error(exc: BaseException) -> JobError:
    cause = root_cause(exc)
    detail = getattr(cause, "public_detail", None) or first_line(cause)
    return JobError(type=type(cause).__name__, detail=detail)


def is_permanent(exc: BaseException) -> bool:
    """The client's fault (a 4xx-class domain error): retrying cannot help."""
    cause = root_cause(exc)
    return isinstance(cause, ServiceError) and cause.status_code < 500


def via(doc: JobDoc, item: Item) -> str:
    return f"{doc.client_id}/{doc.job_id}/{item.index}"


class JobRunner:
    def __init__(
        self,
        deliverer: Deliverer,
        catalog: Any,
        publish: Any,
        variations: dict[str, list[str]],
        config: JobWorkerConfig | None = None,
    ) -> None:
        """``publish(doc) -> Awaitable``: sends a finished job's webhook (the caller signs URLs)."""
        self.deliverer = deliverer
        self.catalog = catalog
        self.publish = publish
        self.variations = variations
        self.config = config or JobWorkerConfig()
        self.owner = new_ulid()
        self.stopping = asyncio.Event()
        self.woken = asyncio.Event()
        self.held: dict[str, asyncio.Task[Any]] = {}
        self.rebuild = KeyRebuild(catalog, deliverer.handles.embedder)

    # ---- the slots ----------------------------------------------------------------------------
    async def run_slot(self) -> None:
        while not self.stopping.is_set():
            leased = await self._lease()
            if leased is None:
                await self._idle()
                continue
            try:
                await self.work(leased)
            except Exception:  # a bug or an outage: the job's lease runs out, it is retried
                log.exception("job %s: its work broke off", leased.doc.job_id)

    async def _idle(self) -> None:
        """Until the next poll, or sooner: a submit woke this replica, or it is stopping."""
        wake = asyncio.ensure_future(self.woken.wait())
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({wake, stop}, timeout=self.config.poll_s, return_when="FIRST_COMPLETED")
        wake.cancel()
        stop.cancel()
        self.woken.clear()  # after the wait: a wake that came while leasing is not lost

    def wake(self) -> None:
        """A job was just submitted: idle slots lease now instead of at their next poll."""
        self.woken.set()

    async def _lease(self) -> Leased | None:
        try:
            leased: Leased | None = await self.catalog.lease_job.remote(
                self.owner, int(self.config.lease_s * 1000)
            )
        except Exception:  # the catalog is restarting or unreachable: try again shortly
            log.warning("could not lease a job", exc_info=True)
            return None
        return leased

    # ---- one job ------------------------------------------------------------------------------
    async def work(self, leased: Leased) -> None:
        lease, doc = leased.lease, leased.doc
        if not doc.finished:
            ended = await self._attempt(lease, doc)
            if ended is None:
                return  # handed back, retried later, or lost: not ours to end
            if not await self.catalog.finish_job.remote(
                lease, ended.status, ended.outcome, ended.error, ended.dead_letter
            ):
                return  # lost the lease at the last moment: the new holder ends it
            self._count_end(doc, ended)
        await self._conclude(lease)

    async def _attempt(self, lease: Lease, doc: JobDoc) -> Ended | None:
        if doc.attempts > doc.max_attempts:  # its workers died mid-job every time
            error = JobError(type="WorkerLost", detail=f"worker lost {doc.max_attempts} times")
            return Ended("failed", None, error, dead_letter=True)
        if doc.attempts == 1:
            observe("soul_job_wait_ms", now_ms() - doc.created_at_ts, kind=doc.kind)
        task = asyncio.create_task(self._run(lease, doc))
        self.held[doc.job_id] = task
        try:
            why = await self._watch(lease, task)
        finally:
            self.held.pop(doc.job_id, None)
        if why == "cancelled":
            return Ended("cancelled", None)
        if why == "lost":
            return None
        if why == "stopping":
            await self.catalog.hand_back.remote(lease)
            return None
        if task.cancelled():  # cancelled by something other than this watcher
            return await self._after_failure(lease, doc, WorkInterrupted())
        try:
            ended: Ended = task.result()
            observe("soul_job_run_ms", now_ms() - (doc.started_at_ts or now_ms()), kind=doc.kind)
            return ended
        except LeaseLost:
            return None
        except Exception as exc:
            return await self._after_failure(lease, doc, exc)

    async def _watch(self, lease: Lease, task: asyncio.Task[Ended]) -> str:
        """Wait for the job's work, renewing its lease and checking for a cancel meanwhile."""
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + self.config.lease_s / 3
        while True:
            done, _ = await asyncio.wait({task}, timeout=self.config.watch_s)
            if done:
                return "done"
            why = ""
            if self.stopping.is_set():
                why = "stopping"
            elif loop.time() >= renew_at:
                renew_at = loop.time() + self.config.lease_s / 3
                if not await self._renewed(lease):
                    why = "lost"
            if not why and await self._cancel_requested(lease):
                why = "cancelled"
            if why:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
                return why

    async def _renewed(self, lease: Lease) -> bool:
        try:
            return bool(await self.catalog.renew_job.remote(lease, int(self.config.lease_s * 1000)))
        except Exception:  # unreachable for now: the lease may still hold; try again next turn
            return True

    async def _cancel_requested(self, lease: Lease) -> bool:
        with contextlib.suppress(Exception):
            return bool(await self.catalog.cancel_requested.remote(lease))
        return False

    async def _after_failure(self, lease: Lease, doc: JobDoc, exc: Exception) -> Ended | None:
        """A transient failure: retried after a backoff, unless that was the last attempt."""
        error = job_error(exc)
        if is_permanent(exc) or doc.attempts >= doc.max_attempts:
            log.warning("job %s failed: %s", doc.job_id, error.detail)
            return Ended("failed", None, error, dead_letter=not is_permanent(exc))
        delay = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (doc.attempts - 1))
        delay_ms = int(delay * random.uniform(0.5, 1.0) * 1000)
        log.info("job %s: attempt %d failed (%s); retry in %d ms", doc.job_id, doc.attempts,
                 error.detail, delay_ms)  # fmt: skip
        count("soul_job_retries", kind=doc.kind)
        await self.catalog.retry_job.remote(lease, error, delay_ms)
        return None

    async def _run(self, lease: Lease, doc: JobDoc) -> Ended:
        spec = SPEC.validate_python(doc.spec)
        if not isinstance(spec, RebuildKeysJob):
            return await self._deliver_all(lease, doc, spec)

        async def save(outcome: Outcome, progress: Progress) -> None:
            if not await self.catalog.save_outcome.remote(lease, outcome, progress):
                raise LeaseLost()

        return Ended("succeeded", await self.rebuild.run(doc, spec, save))

    async def _deliver_all(
        self, lease: Lease, doc: JobDoc, spec: ImageJob | SelfieJob | PackJob
    ) -> Ended:
        outcome = doc.outcome
        ended = {f.index for f in outcome.failed}
        leased_before = lease.version > 1  # an earlier lease may have claimed without recording
        for item in items(spec, self.variations):
            if outcome.items[item.index] is not None or item.index in ended:
                continue
            try:
                delivery = await self._deliver(spec, item, via(doc, item), leased_before)
            except Exception as exc:
                if not is_permanent(exc):
                    raise
                if not isinstance(spec, PackJob):
                    return Ended("failed", outcome, job_error(exc))
                outcome.failed.append(ItemFailure(index=item.index, error=job_error(exc)))
            else:
                outcome.items[item.index] = delivery.model_dump(mode="json")
                count("soul_cache_requests", route="/jobs", soul_id=spec.soul_id,
                      result=delivery.cache)  # fmt: skip
            if not await self.catalog.save_outcome.remote(lease, outcome):
                raise LeaseLost()
        if not outcome.failed:
            return Ended("succeeded", outcome)
        status: Status = "partial" if outcome.delivered else "failed"
        return Ended(status, outcome, outcome.failed[0].error)

    async def _deliver(
        self, spec: ImageJob | SelfieJob | PackJob, item: Item, ref: str, retried: bool
    ) -> Delivery:
        """One item, exactly once: a retry first looks for what an earlier attempt claimed."""
        user = tenant_user(ref.split("/")[0], spec.user_id)  # ref: client/job/index
        if retried and (earlier := await self.deliverer.recover(user, ref)) is not None:
            return earlier
        with contextlib.suppress(Exception):
            await self.catalog.job_progress.remote([ref], "lookup")
        if isinstance(spec, SelfieJob):
            return await self.deliverer.selfie(spec.soul_id, spec.city_key, spec.mood, user, ref)
        return await self.deliverer.image(spec.soul_id, item.cue, user, ref)

    async def _conclude(self, lease: Lease) -> None:
        """The webhook of a finished job, then it leaves the queue."""
        doc: JobDoc | None = await self.catalog.get_job.remote(lease.client_id, lease.job_id)
        if doc is not None and doc.webhook_url:
            await self.publish(doc)
        await self.catalog.conclude_job.remote(lease)

    def _count_end(self, doc: JobDoc, ended: Ended) -> None:
        count("soul_jobs", kind=doc.kind, status=ended.status)
        if ended.dead_letter:
            count("soul_job_dead_letters", kind=doc.kind)

    # ---- stopping -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop leasing; jobs being worked on are handed back by their watchers."""
        self.stopping.set()
