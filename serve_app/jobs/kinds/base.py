"""What a job kind is: the one place that knows a kind's spec, its items, its submit checks,
how an attempt at it runs and what its answer carries (the registry, ``kinds/__init__.py``,
maps each kind's name to one). The desk, the runner and the answers ask the kind; none of them
branches on it.

    submit:   ``check`` refuses what could never be delivered, before anything is written;
              ``items`` says what the job delivers (their count is its progress total);
              ``units`` what its estimate counts (items, unless the kind counts otherwise), or
              ``stages`` by stage
    run:      ``run`` works one attempt at a leased job to its ``Ended``; every write goes
              through ``Attempt.save``, fenced by the lease (``LeaseLost`` when it is gone)
    settle:   ``settle`` tidies what the job's items left unfinished once it has ended for
              good (failed, partial or cancelled; before its end is written, so a worker that
              dies in between settles it again), and for a job cancelled while queued; it must
              be idempotent and leave alone what an item finished
    answer:   ``result`` turns what the job delivered so far into its answer's ``result``,
              URLs signed now
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from serve_app.delivery import Deliverer
from serve_app.errors import ServiceError, first_line, root_cause
from serve_app.jobs.book import (
    ItemFailure,
    JobDoc,
    JobError,
    Lease,
    Looked,
    Outcome,
    Progress,
    Status,
)
from serve_app.jobs.spec import Item, JobBase
from serve_app.storage.objects import ObjectStore

S = TypeVar("S", bound=JobBase)


class LeaseLost(Exception):
    """Another worker holds the job now: this one must write nothing more."""


@dataclass
class Ended:
    """How an attempt at a job ended, to be written when it finishes."""

    status: Status
    outcome: Outcome | None
    error: JobError | None = None
    dead_letter: bool = False


def items_ended(outcome: Outcome) -> Ended:
    """A job of items after its last: succeeded, or partial when some were delivered, else
    failed with its first item's error."""
    if not outcome.failed:
        return Ended("succeeded", outcome)
    return Ended("partial" if outcome.delivered else "failed", outcome, outcome.failed[0].error)


def job_error(exc: BaseException) -> JobError:
    cause = root_cause(exc)
    detail = getattr(cause, "public_detail", None) or first_line(cause)
    return JobError(type=type(cause).__name__, detail=detail)


def is_permanent(exc: BaseException) -> bool:
    """The client's fault (a 4xx-class domain error): retrying cannot help."""
    cause = root_cause(exc)
    return isinstance(cause, ServiceError) and cause.status_code < 500


@dataclass(frozen=True)
class JobTools:
    """What kinds work with: the replica's ``Deliverer``, the Catalog's handle, and the
    phrases a pack varies its cue with (``config/variations.yaml``)."""

    deliverer: Deliverer
    catalog: Any
    variations: dict[str, list[str]]


@dataclass(frozen=True)
class Attempt:
    """One attempt at a leased job, as its kind runs it."""

    lease: Lease
    doc: JobDoc
    tools: JobTools
    looked: Looked | None = None  # the lease's lookup of an image job's item

    async def save(self, outcome: Outcome, progress: Progress | None = None) -> None:
        """Keep what the job has done so far (a retry goes on from there)."""
        if not await self.tools.catalog.save_outcome.remote(self.lease, outcome, progress):
            raise LeaseLost()


class JobKind(ABC, Generic[S]):
    """A kind of job; one instance of each sits in the registry."""

    name: ClassVar[str]
    spec: type[S]
    submitted: ClassVar[bool] = True
    """Submitted through ``POST /jobs`` (False: through a route of its own)."""
    lease_lookup: ClassVar[bool] = False
    """Its one item is the spec's ``cue`` for its ``user_id``: the catalog looks it up, and
    claims it on a hit, as it first leases the job (``Attempt.looked``)."""
    styled: ClassVar[bool] = False
    """Its soul must exist and have a style: the catalog checks it as it takes the submit (a
    404 or a 409, nothing written), so the submit costs one catalog call, not two."""

    def parse(self, raw: dict[str, Any]) -> S:
        """The spec as the job row keeps it, typed again."""
        return self.spec.model_validate(raw)

    @abstractmethod
    def items(self, spec: S, variations: dict[str, list[str]]) -> list[Item]:
        """What the job delivers, item by item."""

    @abstractmethod
    async def check(self, spec: S, tools: JobTools) -> None:
        """Refuse (a domain error) what this job could never deliver."""

    async def units(self, spec: S, tools: JobTools) -> int:
        """What the job's estimate counts (its run times are recorded per such unit)."""
        return len(self.items(spec, tools.variations))

    def stages(self, spec: S) -> dict[str, int] | None:
        """What the job's estimate counts by stage (``catalog/estimates.py``), each priced by
        its own measured time; None: by ``units`` of the kind's own."""
        return None

    @abstractmethod
    async def run(self, spec: S, attempt: Attempt) -> Ended:
        """One attempt, to its end (raising: a failure the runner retries or ends)."""

    @abstractmethod
    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> BaseModel | None:
        """What the job delivered so far, as its answer's ``result`` (None: nothing yet)."""

    async def settle(self, spec: S, doc: JobDoc, tools: JobTools) -> None:
        """The job has ended for good as ``doc`` says (its status, outcome and error): tidy
        what its unfinished items left behind. Nothing, unless the kind writes before it works."""


def unfinished(doc: JobDoc) -> dict[int, str]:
    """The items of an ended job that were not made, each with why: its own error, else the
    job's (a cancel when it has none)."""
    failed = {f.index: f.error.detail for f in doc.outcome.failed}
    why = doc.error.detail if doc.error else f"the job ended {doc.status}"
    return {i: failed.get(i, why) for i, made in enumerate(doc.outcome.items) if made is None}


async def made_item_by_item(
    attempt: Attempt, stages: list[str], make: Callable[[int], Awaitable[Any]]
) -> Ended:
    """Item ``i`` made by ``make(i)`` unless an earlier attempt made or failed it; a permanent
    failure fails its item only; progress saved after each, its stage ``stages[i]``."""
    outcome = attempt.doc.outcome
    for index in items_left(outcome):
        await made_or_failed(outcome, index, make)
        progress = Progress(
            done=outcome.done, total=len(outcome.items), stage=stages[index], item=index
        )
        await attempt.save(outcome, progress)
    return items_ended(outcome)


def items_left(outcome: Outcome) -> list[int]:
    """The items no earlier attempt made or failed."""
    ended = {f.index for f in outcome.failed}
    return [i for i, made in enumerate(outcome.items) if made is None and i not in ended]


async def made_or_failed(
    outcome: Outcome, index: int, make: Callable[[int], Awaitable[Any]]
) -> None:
    """Item ``index`` made by ``make``, or failed alone on a permanent error (any other error
    ends the attempt, which the runner retries)."""
    try:
        made = await make(index)
    except Exception as exc:
        if not is_permanent(exc):
            raise
        outcome.failed.append(ItemFailure(index=index, error=job_error(exc)))
    else:
        outcome.items[index] = made
