"""The ``reserve`` job: one refill of a hot prompt key, queued by the catalog's planner
(``catalog/reserve.py``) in the reserve lane, below every user's job; never through
``POST /jobs``.

    lock:     the key's work lock (the one a user's render of the key takes), so two workers,
              or a worker and a user's render, never make the key's variants at once
    short?:   under the lock, the catalog says how many variants the key lacks to be
              ``depth`` ahead of its most demanding recent user: none (full, cooled down, the
              budget's warning level reached) ends the job with nothing made
    make:     an ordinary new variant (render → checks → animate → encode → record, its cost
              recorded) claimed by no one, rendered in the background lane and marked
              ``reserve`` in its meta, made with the soul's latest locked identity (what
              its next users' lookups claim); a user's render arriving at its replica stops
              it at the next denoising step (``Preempted``): the job ends cancelled, the
              next plan queues it again
"""

from __future__ import annotations

from typing import Literal

from serve_app.characters.uses import identity_of
from serve_app.delivery.checks import with_identity
from serve_app.delivery.lookups import style_of
from serve_app.delivery.order import Order
from serve_app.errors import Preempted, root_cause
from serve_app.jobs.book import JobDoc
from serve_app.jobs.kinds.base import Attempt, Ended, JobKind, JobTools
from serve_app.jobs.spec import Item, JobBase
from serve_app.metrics import count
from serve_app.prompts import cue_part, render_prompt
from serve_app.schemas import PromptKey, Variant
from serve_app.storage.objects import ObjectStore


class ReserveJob(JobBase):
    """One new variant of a hot key, claimed by no one until a user asks."""

    kind: Literal["reserve"] = "reserve"
    pk_id: str


class ReserveKind(JobKind[ReserveJob]):
    name = "reserve"
    spec = ReserveJob
    submitted = False

    def items(self, spec: ReserveJob, variations: dict[str, list[str]]) -> list[Item]:
        return [Item(0)]  # the variant made, if any

    async def check(self, spec: ReserveJob, tools: JobTools) -> None:
        """Queued by the catalog for a key it counts requests of: nothing to refuse."""

    async def run(self, spec: ReserveJob, attempt: Attempt) -> Ended:
        deliverer, outcome = attempt.tools.deliverer, attempt.doc.outcome
        key: PromptKey | None = await deliverer.catalog.get_prompt_key.remote(spec.pk_id)
        if key is None:
            return Ended("succeeded", outcome)
        style = await style_of(deliverer.catalog, spec.soul_id)
        async with deliverer.locks.hold(f"render:{spec.pk_id}"):
            if await deliverer.catalog.reserve_short.remote(spec.pk_id) <= 0:
                return Ended("succeeded", outcome)
            cue = cue_part(key.key_norm)
            siblings: list[Variant] = await deliverer.catalog.list_variants.remote(spec.pk_id)
            order = Order(
                key=key,
                style=style,
                cue=cue,
                prompt=render_prompt(style, cue),
                waiting={},
                siblings=tuple(siblings),
                attempts=deliverer.config.dedupe_attempts,
                reserve=True,
            )
            if (identity := await identity_of(deliverer.catalog, spec.soul_id)) is not None:
                order = with_identity(order, identity, deliverer.config.identity)
            try:
                variant, _ = await deliverer.maker.make(order)
            except Exception as exc:
                if not _preempted(exc):
                    raise
                count("soul_reserve_preempted", soul_id=spec.soul_id)
                return Ended("cancelled", outcome)
        count("soul_reserve_refills", soul_id=spec.soul_id)
        outcome.items[0] = {"pk_id": spec.pk_id, "variant_id": variant.variant_id}
        return Ended("succeeded", outcome)

    def result(self, doc: JobDoc, objects: ObjectStore, ttl_s: int) -> None:
        """A refill delivers to no one: its variant waits for the key's next users."""
        return None


def _preempted(exc: BaseException) -> bool:
    """``Preempted``, itself or behind the wrappers of the replicas it came through (the
    render's error reaches the worker through the check that awaited it)."""
    for _ in range(4):
        if isinstance(exc, Preempted):
            return True
        cause = root_cause(exc)
        if cause is exc:
            return False
        exc = cause
    return False
