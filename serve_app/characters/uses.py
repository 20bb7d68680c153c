"""Which identity a new variant of a soul is made with: the soul's latest locked version (its
anchors judge the render, its references and strength condition it), or none; and the verdict
of a delivered variant, counted."""

from __future__ import annotations

from typing import Any

from serve_app.characters.identities import IdentityVersion
from serve_app.characters.verdicts import IdentityConditioning, IdentityUse, Verdict
from serve_app.metrics import count, observe
from serve_app.schemas import Variant


def use_of(version: IdentityVersion) -> IdentityUse | None:
    """A locked version as an order carries it (None: it has nothing to condition on)."""
    if version.anchors is None or not version.references:
        return None
    conditioning = IdentityConditioning(
        soul_id=version.soul_id,
        version=version.version,
        reference_keys=version.references,
        strength=version.strength,
    )
    return IdentityUse(version=version.version, anchors=version.anchors, conditioning=conditioning)


async def identity_of(catalog: Any, soul_id: str) -> IdentityUse | None:
    """The soul's latest locked identity version, as an order carries it; None without one."""
    locked: IdentityVersion | None = await catalog.locked_identity.remote(soul_id, None)
    return None if locked is None else use_of(locked)


def counted(variant: Variant) -> None:
    """Record a delivered variant's identity verdict (a soul without one records nothing)."""
    verdict = variant.meta.get("identity_verdict")
    if verdict is None:
        return
    judged = Verdict.model_validate(verdict)
    flagged = str(bool(variant.meta.get("identity_flagged"))).lower()
    count(
        "soul_identity_verdicts", soul_id=variant.soul_id, verdict=judged.verdict, flagged=flagged
    )
    if judged.score is not None and judged.scorer is not None:
        observe("soul_identity_score", judged.score, scorer=judged.scorer)
