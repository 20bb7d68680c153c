"""The checks a new render goes through before it becomes a variant: a list, run in order.

A check gets the render on its way and the order (the key, its style, its variants so far) and
answers with a ``Judgement``: pass, again, or keep best (``serve_app.delivery.order.Answer``).
Dedupe is the one check today; a check that judges a render another way (the identity check)
is one more entry in the list the Deliverer builds, not a new branch in the pipeline.
"""

from __future__ import annotations

from typing import Any, Protocol

from serve_app.delivery.order import Answer, Judgement, Order, Render
from serve_app.schemas import DedupeVerdict


class Check(Protocol):
    async def judge(self, render: Render, order: Order) -> Judgement:
        """This check's answer on ``render``, a candidate for a new variant of ``order.key``."""
        ...


class DedupeCheck:
    """Not a near copy of the key's variants (pHash, and CLIP with ``dedupe.clip_model``)."""

    def __init__(self, dedupe: Any) -> None:
        self.dedupe = dedupe

    async def judge(self, render: Render, order: Order) -> Judgement:
        known = [v.fingerprint for v in order.siblings]
        verdict: DedupeVerdict = await self.dedupe.check.remote(render.image, known)
        answer = Answer.AGAIN if verdict.duplicate else Answer.PASS
        return Judgement(answer, _distance(verdict), found=verdict, render_s=verdict.render_s)


def _distance(verdict: DedupeVerdict) -> tuple[float, int]:
    """How distinct a render is: in image embedding first, where there is one, then in pHash."""
    clip = 2.0 if verdict.clip_distance is None else verdict.clip_distance
    return clip, 64 if verdict.min_distance is None else verdict.min_distance
