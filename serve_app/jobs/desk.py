"""The job routes' logic, without HTTP (the routes only translate it): check and submit a job,
read, list and cancel a client's jobs, stream a job's events, the queue's stats and estimates.
What differs between kinds is asked of the kind (``jobs/kinds/``).

A client (``client_scope``: its API key) sees only its own jobs: another client's job id is a
404, as if it did not exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve_app.api.protocol import CancelAnswer, JobAccepted, JobPage, JobView
from serve_app.delivery import Deliverer
from serve_app.errors import NotFound, ServiceError
from serve_app.jobs.answers import job_answer, job_links
from serve_app.jobs.book import JobDoc, Submitted
from serve_app.jobs.kinds import KINDS
from serve_app.jobs.kinds.base import JobTools
from serve_app.jobs.spec import JobBase
from serve_app.jobs.webhooks import check_webhook_url
from serve_app.settings import Settings
from serve_app.storage.changes import ChangeFeed, job_ref
from serve_app.storage.objects import ObjectStore


class JobQueueConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(
        default=3, ge=1, le=20, description="Attempts of a job before it is a dead letter."
    )
    events_keepalive_s: float = Field(
        default=15,
        gt=0,
        description="A stream that got no change notice for this long reads its job anyway (a "
        "notice can be lost while the change feed reconnects) and sends a comment line that "
        "keeps it open.",
    )


class TooManyJobs(ServiceError):
    """A client over its queued-job quota or its submit rate."""

    status_code = 429


class UnknownJob(NotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"unknown job {job_id!r}")


class JobDesk:
    def __init__(
        self,
        deliverer: Deliverer,
        catalog: Any,
        objects: ObjectStore,
        settings: Settings,
        variations: dict[str, list[str]],
        changes: ChangeFeed,
        config: JobQueueConfig | None = None,
    ) -> None:
        """``changes``: this replica's feed of job changes, which the event streams wait on (a
        submitted job needs no wake-up call: a worker's lease waiting in the Catalog hears of
        its queue row through the Catalog's own feed)."""
        self.changes = changes
        self.tools = JobTools(deliverer, catalog, variations)
        self.catalog = catalog
        self.objects = objects
        self.settings = settings
        self.config = config or JobQueueConfig()

    async def check(self, spec: JobBase) -> None:
        """Refuse, before anything is written, what the job could never deliver."""
        await KINDS[spec.kind].check(spec, self.tools)
        if spec.webhook_url is not None:
            await asyncio.to_thread(check_webhook_url, str(spec.webhook_url), self.settings.jobs)

    async def admit(self, client_id: str) -> str:
        """Before a route writes what its job is for: a ticket (the job's id, one of the
        client's quota slots claimed for it in one conditional insert) to ``submit`` with, or
        429 for a client over its quota or rate. Two concurrent routes never both get the last
        slot; one that fails before it submits gives its ticket back (``release``)."""
        admitted: Submitted | str = await self.catalog.admit_job.remote(
            client_id, self.settings.jobs.job_queued_quota, self.settings.jobs.job_submit_rate
        )
        if isinstance(admitted, Submitted):
            raise TooManyJobs(admitted.refused or "", retry_after_s=admitted.retry_after_s)
        return admitted

    async def release(self, client_id: str, ticket: str) -> None:
        await self.catalog.release_job_slot.remote(client_id, ticket)

    async def submit(self, client_id: str, spec: JobBase, ticket: str | None = None) -> JobAccepted:
        kind = KINDS[spec.kind]
        total = len(kind.items(spec, self.tools.variations))
        submitted: Submitted = await self.catalog.submit_job.remote(
            client_id,
            spec.model_dump(mode="json"),
            total,
            self.config.max_attempts,
            self.settings.jobs.job_queued_quota,
            self.settings.jobs.job_submit_rate,
            units=await kind.units(spec, self.tools),
            styled=kind.styled,
            ticket=ticket,
            stages=kind.stages(spec),
        )
        if submitted.doc is None:
            raise TooManyJobs(submitted.refused or "", retry_after_s=submitted.retry_after_s)
        return JobAccepted(
            job_id=submitted.doc.job_id,
            status=submitted.doc.status,
            position=submitted.position,
            estimated_s=submitted.estimated_s,
            links=job_links(submitted.doc.job_id),
        )

    async def job(self, client_id: str, job_id: str) -> JobDoc:
        doc: JobDoc | None = await self.catalog.get_job.remote(client_id, job_id)
        if doc is None:
            raise UnknownJob(job_id)
        return doc

    async def view(self, client_id: str, job_id: str) -> JobView:
        return await self._answer(await self.job(client_id, job_id))

    async def page(
        self, client_id: str, filters: dict[str, str], after: str | None, limit: int
    ) -> JobPage:
        docs: list[JobDoc] = await self.catalog.list_jobs.remote(client_id, filters, after, limit)
        views = [await self._answer(doc) for doc in docs]
        return JobPage(jobs=views, next_after=docs[-1].job_id if len(docs) == limit else None)

    async def cancel(self, client_id: str, job_id: str) -> CancelAnswer:
        """Idempotent: a cancelled job answers ``cancelled: true`` however often it is asked; a
        running one is stopping (``status`` still running) when the answer comes."""
        doc = await self.job(client_id, job_id)
        if not doc.finished:
            doc = await self.catalog.cancel_job.remote(client_id, job_id)
        stopping = not doc.finished and doc.cancel_requested
        return CancelAnswer(cancelled=doc.status == "cancelled" or stopping, status=doc.status)

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self.catalog.job_stats.remote()
        return stats

    async def estimate(self, kind: str, soul_id: str | None, count: int) -> dict[str, Any]:
        estimate: dict[str, Any] = await self.catalog.estimate_job.remote(kind, soul_id, count)
        return estimate

    async def opened_events(self, client_id: str, job_id: str) -> AsyncIterator[str]:
        """``events``, its first frame already read: an unknown job raises here, before the
        stream starts, and the job is read once to open it (not once to check, once to start)."""
        frames = self.events(client_id, job_id)
        first = await anext(frames)
        return _after(first, frames)

    def followed(self, client_id: str, accepted: JobAccepted) -> AsyncIterator[str]:
        """The events of a job just submitted (``POST /jobs`` with ``Accept:
        text/event-stream``): the submit's answer first (``accepted``), then ``events``. One
        request where a client would otherwise make two (the submit, then its stream); the
        job exists, so nothing is read before the answer starts."""
        return _after(_event("accepted", accepted), self.events(client_id, accepted.job_id))

    async def events(self, client_id: str, job_id: str) -> AsyncGenerator[str, None]:
        """Server-Sent Events: ``status`` (the whole job, first and on every status change),
        ``progress``, ``item`` (a pack item as it is delivered), and ``done`` at the end. The
        stream reads its job when the change feed says it changed (no polling), and after
        ``events_keepalive_s`` without a notice; an event goes out only when the job changed."""
        async with self.changes.watch(job_ref(client_id, job_id)) as changed:
            doc = await self.job(client_id, job_id)
            view = await self._answer(doc)
            yield _event("status", view)
            sent_items = {i for i, item in enumerate(doc.outcome.items) if item is not None}
            while not doc.finished:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), self.config.events_keepalive_s)
                noticed = changed.is_set()
                changed.clear()
                now = await self.job(client_id, job_id)
                if now == doc:
                    if not noticed:
                        yield ": keep-alive\n\n"
                    continue
                view = await self._answer(now)
                for frame in _changes(doc, now, view, sent_items):
                    yield frame
                doc = now
        # The last answer, signed moments ago: ``done`` follows the last change's frames at
        # once, without another wait, so they leave in one message.
        yield _event("done", view)

    async def _answer(self, doc: JobDoc) -> JobView:
        return await asyncio.to_thread(job_answer, self.objects, self.settings.media, doc)


async def _after(first: str, frames: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    try:
        yield first
        async for frame in frames:
            yield frame
    finally:  # a client that left: the job's watch ends now, not when collected
        await frames.aclose()


def _changes(before: JobDoc, now: JobDoc, view: JobView, sent_items: set[int]) -> list[str]:
    """The events that tell a client how ``before`` became ``now`` (``view``: ``now``'s answer);
    ``sent_items`` gains the items they announce."""
    frames = []
    if now.status != before.status and not now.finished:
        frames.append(_event("status", view))
    if now.progress != before.progress:
        frames.append(_event("progress", view.progress))
    for index, item in _new_items(view, sent_items):
        sent_items.add(index)
        frames.append(_event("item", {"index": index, "item": item}))
    return frames


def _new_items(view: JobView, sent: set[int]) -> list[tuple[int, Any]]:
    result = view.result
    delivered = getattr(result, "items", None)
    if delivered is None:
        return []
    return [(i, item.model_dump(mode="json")) for i, item in enumerate(delivered)
            if item is not None and i not in sent]  # fmt: skip


def _event(name: str, data: BaseModel | dict[str, Any]) -> str:
    payload = data.model_dump(mode="json", by_alias=True) if isinstance(data, BaseModel) else data
    return f"event: {name}\ndata: {json.dumps(payload, sort_keys=True)}\n\n"
