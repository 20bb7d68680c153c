"""The JobWorker's engine: lease jobs, run each one as its kind says, end it.

    leaser:   one per replica; while a slot is free it leases (high lane first, fair between
              clients) and hands the job to a slot; while the queue is empty its lease call
              waits in the catalog, up to ``lease_wait_s``, and returns as soon as a job is
              queued through any replica or a retry is due (``catalog/job_leases.py``): no
              polling, one call per ``lease_wait_s`` while idle; a slot set free makes it lease
              again at once (a waiting call that left refills out for want of a second free
              slot is dropped and made again with them); a stopping replica drops its waiting
              call
    work:     the job's kind runs the attempt (``jobs/kinds/``: deliveries go on where the last
              attempt stopped, a key rebuild through its pages), while a watcher renews the
              lease and checks for a cancel
    end:      succeeded / partial / failed (permanent errors at once; transient ones retried
              with backoff up to max_attempts, then a dead letter) / cancelled; its kind settles
              what the unfinished items left (before the end is written: a worker dying in
              between leaves it to the next, which settles it again); then the webhook, then
              the job leaves the queue (without a webhook, in the same catalog call); a job
              leased already ended (cancelled while queued) is settled as it is concluded
    stop:     a stopping replica hands back what it holds at once (the lease is released)

Every write is fenced by the lease version: a worker that lost its lease stops writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve_app.delivery import Deliverer
from serve_app.delivery.coalesce import WorkInterrupted
from serve_app.ids import new_ulid, now_ms
from serve_app.jobs.book import JobDoc, JobError, Lease, Leased
from serve_app.jobs.kinds import KINDS, LEASE_LOOKUPS
from serve_app.jobs.kinds.base import Attempt, Ended, JobTools, LeaseLost, is_permanent, job_error
from serve_app.metrics import count, observe

log = logging.getLogger("ray.serve")

LEASE_ERROR_PAUSE_S = 1.0  # after a lease call that failed (the catalog restarts), before the next


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
    lease_wait_s: float = Field(
        default=10,
        gt=0,
        le=15,
        description="How long an idle lease call waits in the Catalog for a job before it "
        "returns empty (a job queued meanwhile is leased at once): an idle replica makes one "
        "call per this. Below the Catalog's graceful_shutdown_timeout_s (Serve's default 20), "
        "so a stopping Catalog replica answers its waiting leases before it is killed.",
    )
    watch_s: float = Field(
        default=0.25, gt=0, description="How often a running job is checked for a cancel."
    )
    backoff_s: float = Field(
        default=1, gt=0, description="First retry delay; doubles per attempt, with jitter."
    )
    backoff_max_s: float = Field(default=60, gt=0, description="Longest retry delay.")
    webhook_attempts: int = Field(default=5, ge=1, le=20, description="Tries per webhook.")


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
        self.tools = JobTools(deliverer, catalog, variations)
        self.config = config or JobWorkerConfig()
        self.owner = new_ulid()
        self.stopping = asyncio.Event()
        self.freed = asyncio.Event()
        self.working: set[asyncio.Task[None]] = set()  # one per slot in use
        self.held: dict[str, asyncio.Task[Any]] = {}

    # ---- the leaser ---------------------------------------------------------------------------
    async def run(self) -> None:
        """Lease into free slots until the replica stops; then wait for the slots to end (their
        watchers hand back what they hold)."""
        while not self.stopping.is_set():
            if len(self.working) >= self.config.slots:
                await self._until(self.freed)
                continue
            leased = await self._lease()
            if leased is None:
                continue  # the call waited in the catalog (or broke off: ``_lease`` paused)
            slot = asyncio.create_task(self._work_in_slot(leased))
            self.working.add(slot)
            slot.add_done_callback(self._free)
        if self.working:
            await asyncio.wait(self.working)

    def _free(self, slot: asyncio.Task[None]) -> None:
        self.working.discard(slot)
        self.freed.set()

    async def _until(self, event: asyncio.Event, timeout_s: float | None = None) -> None:
        """Until ``event`` is set (then it is cleared) or the timeout, or sooner: stopping."""
        happened = asyncio.ensure_future(event.wait())
        stop = asyncio.ensure_future(self.stopping.wait())
        await asyncio.wait({happened, stop}, timeout=timeout_s, return_when="FIRST_COMPLETED")
        happened.cancel()
        stop.cancel()
        event.clear()  # after the wait: one set while leasing is seen by the next wait

    async def _work_in_slot(self, leased: Leased) -> None:
        try:
            await self.work(leased)
        except Exception:  # a bug or an outage: the job's lease runs out, it is retried
            log.exception("job %s: its work broke off", leased.doc.job_id)

    async def _lease(self) -> Leased | None:
        """A job, or None after the call's wait in the catalog; a stopping replica drops the
        call (the catalog hands back a job leased as it was dropped)."""
        # A refill never takes a replica's last free slot: a user's job finds one. A call made
        # without refills is made again when another slot is set free meanwhile (it would wait
        # out lease_wait_s with a refill queued and two slots free).
        self.freed.clear()
        refills = len(self.working) + 1 < self.config.slots
        lease_ms = int(self.config.lease_s * 1000)
        call = self.catalog.lease_job.remote(
            self.owner, lease_ms, refills, self.config.lease_wait_s, LEASE_LOOKUPS
        )
        leasing = asyncio.ensure_future(call)
        others = [asyncio.ensure_future(self.stopping.wait())]
        if not refills:
            others.append(asyncio.ensure_future(self.freed.wait()))
        await asyncio.wait({leasing, *others}, return_when="FIRST_COMPLETED")
        for other in others:
            other.cancel()
        if not leasing.done():
            call.cancel()  # the catalog hands back a job it leases as the cancel comes
            return await self._dropped(leasing)
        try:
            leased: Leased | None = leasing.result()
        except Exception:  # the catalog is restarting or unreachable: try again shortly
            log.warning("could not lease a job", exc_info=True)
            await self._until(asyncio.Event(), timeout_s=LEASE_ERROR_PAUSE_S)
            return None
        return leased

    async def _dropped(self, leasing: asyncio.Future[Leased | None]) -> Leased | None:
        """What a dropped call still answers: a job it leased before the cancel reached the
        catalog is worked on (a slot was set free) or, when stopping, handed back; never left
        to wait out its lease (``lease_s``) as it was when the answer was thrown away."""
        try:
            leased = await leasing
        except asyncio.CancelledError:
            if (task := asyncio.current_task()) is not None and task.cancelling():
                raise  # this leaser is cancelled, not only its call
            return None
        except Exception:  # the call was cancelled in the catalog: it leased nothing
            return None
        if leased is not None and self.stopping.is_set():
            await self.catalog.hand_back.remote(leased.lease)
            return None
        return leased

    # ---- one job ------------------------------------------------------------------------------
    async def work(self, leased: Leased) -> None:
        lease, doc = leased.lease, leased.doc
        if not doc.finished:
            ended = await self._attempt(leased)
            if ended is None:
                return  # handed back, retried later, or lost: not ours to end
            outcome = ended.outcome or doc.outcome  # an attempt's items as far as it got
            end = {"status": ended.status, "outcome": outcome, "error": ended.error}
            await self._settle(doc.model_copy(update=end))
            concluded = not doc.webhook_url  # nothing to send: it leaves the queue as it ends
            if not await self.catalog.finish_job.remote(
                lease, ended.status, ended.outcome, ended.error, ended.dead_letter, concluded
            ):
                return  # lost the lease at the last moment: the new holder ends it
            self._count_end(doc, ended)
            if concluded:
                return
        else:
            await self._settle(doc)
        await self._conclude(lease, doc)

    async def _settle(self, ended: JobDoc) -> None:
        """The kind tidies what the ended job's unfinished items left (``kinds/base.py``); a
        failure to is logged, never in the way of the job's end."""
        if ended.status == "succeeded":
            return
        kind = KINDS[ended.kind]
        try:
            await kind.settle(kind.parse(ended.spec), ended, self.tools)
        except Exception:
            log.exception("job %s: could not settle its unfinished items", ended.job_id)

    async def _attempt(self, leased: Leased) -> Ended | None:
        lease, doc = leased.lease, leased.doc
        if doc.attempts > doc.max_attempts:  # its workers died mid-job every time
            error = JobError(type="WorkerLost", detail=f"worker lost {doc.max_attempts} times")
            return Ended("failed", None, error, dead_letter=True)
        if doc.attempts == 1:
            observe("soul_job_wait_ms", now_ms() - doc.created_at_ts, kind=doc.kind)
        task = asyncio.create_task(self._run(leased))
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
        await self.catalog.retry_job.remote(lease, error, delay_ms)  # leased again when due
        return None

    async def _run(self, leased: Leased) -> Ended:
        kind = KINDS[leased.doc.kind]
        attempt = Attempt(leased.lease, leased.doc, self.tools, leased.looked)
        return await kind.run(kind.parse(leased.doc.spec), attempt)

    async def _conclude(self, lease: Lease, leased: JobDoc) -> None:
        """The webhook of a finished job (read as it ended, only when it has one: the URL is
        the spec's), then it leaves the queue."""
        if leased.webhook_url:
            doc: JobDoc | None = await self.catalog.get_job.remote(lease.client_id, lease.job_id)
            if doc is not None:
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
