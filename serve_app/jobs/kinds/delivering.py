"""The kinds whose items are deliveries to one user through the ``Deliverer`` (image, selfie,
pack): how their attempts run, whatever the item.

    each item not yet delivered, in order: a retry goes on where the last attempt stopped, and
    an item whose claim was made but not recorded (its worker died between the two) is
    recovered by its job item reference, not delivered twice
    a permanent failure of an item fails the job, or, in a kind that delivers ``partial``ly,
    only that item; a transient one breaks the attempt off (the runner retries it)
    each item's result is saved as it comes, fenced by the lease, but the last one's: the
    job's end writes it with the status (a job answered by a hit is leased, claimed and ended:
    three catalog calls, two writes of its document); a worker that dies between that claim
    and the end leaves the claim, which the retry recovers
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from serve_app.delivery import Delivery, tenant_user
from serve_app.jobs.book import ItemFailure, JobDoc, item_ref
from serve_app.jobs.kinds.base import (
    Attempt,
    Ended,
    JobKind,
    JobTools,
    S,
    is_permanent,
    items_ended,
    job_error,
)
from serve_app.jobs.spec import Item
from serve_app.metrics import count
from serve_app.schemas import KeyLookup


def via(doc: JobDoc, item: Item) -> str:
    """The job item's reference (``client/job/index``): claims and progress carry it."""
    return item_ref(doc.client_id, doc.job_id, item.index)


class DeliveringKind(JobKind[S]):
    styled = True
    partial: ClassVar[bool] = False
    """A permanently failed item fails only itself (the job ends ``partial``)."""

    @abstractmethod
    async def deliver(
        self,
        spec: S,
        item: Item,
        user: str,
        ref: str,
        tools: JobTools,
        known: KeyLookup | None = None,
    ) -> Delivery:
        """One item, for ``user`` (the tenant-scoped id), claimed under ``ref``; ``known``:
        the item's lookup, already made (and claimed) by the job's lease."""

    async def run(self, spec: S, attempt: Attempt) -> Ended:
        doc = attempt.doc
        outcome = doc.outcome
        ended = {f.index for f in outcome.failed}
        items = self.items(spec, attempt.tools.variations)
        pending = [i for i in items if outcome.items[i.index] is None and i.index not in ended]
        for item in pending:
            try:
                delivery = await self._deliver_once(spec, item, attempt)
            except Exception as exc:
                if not is_permanent(exc):
                    raise
                if not self.partial:
                    return Ended("failed", outcome, job_error(exc))
                outcome.failed.append(ItemFailure(index=item.index, error=job_error(exc)))
            else:
                outcome.items[item.index] = delivery.model_dump(mode="json")
                count("soul_cache_requests", route="/jobs", soul_id=doc.soul_id,
                      result=delivery.cache)  # fmt: skip
            if item is not pending[-1]:  # the last one is written with the job's end
                await attempt.save(outcome)
        return items_ended(outcome)

    async def _deliver_once(self, spec: S, item: Item, attempt: Attempt) -> Delivery:
        """One item, exactly once: a retry first looks for what an earlier attempt claimed."""
        doc, tools, ref = attempt.doc, attempt.tools, via(attempt.doc, item)
        user = tenant_user(doc.client_id, doc.user_id)
        looked = attempt.looked if item.index == 0 else None
        known = None if looked is None else looked.lookup
        # An earlier lease may have claimed, or the lease's own lookup that broke off.
        unsure = attempt.lease.version > 1 or (looked is not None and known is None)
        if unsure and (earlier := await tools.deliverer.recover(user, ref)) is not None:
            return earlier
        return await self.deliver(spec, item, user, ref, tools, known)
