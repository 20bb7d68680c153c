"""The checks a new render goes through before it becomes a variant: a list, run in order.

A check gets the render on its way, the order (the key, its style, its variants so far) and the
judgements of the checks before it, and answers with a ``Judgement``: pass, again, or keep best
(``serve_app.delivery.order.Answer``). Dedupe judges novelty and, for a soul with a locked
identity, identity in one call (one image embedding per render): ``DedupeCheck`` asks,
``IdentityCheck`` reads the identity verdict from its finding and gates on it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

from serve_app.characters.verdicts import (
    IdentityJudging,
    IdentityStamp,
    IdentityThresholds,
    IdentityUse,
    Verdict,
)
from serve_app.delivery.order import Answer, Candidate, Judgement, Order, Render
from serve_app.schemas import DedupeVerdict


class Check(Protocol):
    async def judge(
        self, render: Render, order: Order, earlier: tuple[Judgement, ...]
    ) -> Judgement:
        """This check's answer on ``render``, a candidate for a new variant of ``order.key``,
        after the checks before it judged it (``earlier``)."""
        ...


class DedupeCheck:
    """Not a near copy of the key's variants (pHash, and CLIP with ``dedupe.clip_model``); for
    an order with an identity, Dedupe judges the render's identity in the same call."""

    def __init__(self, dedupe: Any, thresholds: Callable[[], IdentityThresholds]) -> None:
        self.dedupe = dedupe
        self.thresholds = thresholds  # live: the Deliverer's config as reconfigured

    async def judge(
        self, render: Render, order: Order, earlier: tuple[Judgement, ...]
    ) -> Judgement:
        known = [v.fingerprint for v in order.siblings]
        identity = None
        if order.identity is not None:
            identity = IdentityJudging(anchors=order.identity.anchors, thresholds=self.thresholds())
        verdict: DedupeVerdict = await self.dedupe.check.remote(render.image, known, identity)
        answer = Answer.AGAIN if verdict.duplicate else Answer.PASS
        return Judgement(answer, _distance(verdict), found=verdict, render_s=verdict.render_s)


class IdentityCheck:
    """The render shows the soul's character: ``verified`` passes; ``off_model`` and
    ``unscorable`` (a new seed may show a scorable face) render again while attempts last,
    after which the best scored is delivered and flagged (``identity_facts``)."""

    async def judge(
        self, render: Render, order: Order, earlier: tuple[Judgement, ...]
    ) -> Judgement:
        if order.identity is None:
            return Judgement(Answer.PASS, (0.0,))
        verdict = next(j.found.identity for j in earlier if isinstance(j.found, DedupeVerdict))
        assert verdict is not None, "Dedupe judges identity for an order with one"
        score = -2.0 if verdict.score is None else verdict.score  # below any cosine
        answer = Answer.PASS if verdict.verdict == "verified" else Answer.AGAIN
        return Judgement(answer, (score,), found=verdict)


def with_identity(order: Order, identity: IdentityUse, thresholds: IdentityThresholds) -> Order:
    """``order`` made with ``identity``: conditioned on it, gated on it, with at least the
    gate's attempts."""
    return dataclasses.replace(
        order, identity=identity, attempts=max(order.attempts, thresholds.attempts)
    )


def identity_facts(order: Order, candidate: Candidate) -> dict[str, Any]:
    """What a variant keeps of its identity verdict (its meta): ``identity`` (version, verdict,
    score, as every answer carries it), the whole verdict and whether it is flagged."""
    verdict = next((j.found for j in candidate.judgements if isinstance(j.found, Verdict)), None)
    if order.identity is None or verdict is None:
        return {}
    stamp = IdentityStamp(
        version=order.identity.version, verdict=verdict.verdict, score=verdict.score
    )
    return {
        "identity": stamp.model_dump(),
        "identity_verdict": verdict.model_dump(),
        "identity_flagged": verdict.verdict != "verified",
    }


def _distance(verdict: DedupeVerdict) -> tuple[float, int]:
    """How distinct a render is: in image embedding first, where there is one, then in pHash."""
    clip = 2.0 if verdict.clip_distance is None else verdict.clip_distance
    return clip, 64 if verdict.min_distance is None else verdict.min_distance
