"""Which identity a new variant of a soul is made with: the soul's latest locked version, or
the locked one a request pins (its anchors judge the render, its references and strength
condition it), or none; which stored variants a request may be served (those made with that
version: ``made_with``); and the verdict of a delivered variant, counted."""

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


async def identity_of(catalog: Any, soul_id: str, pinned: int | None = None) -> IdentityUse | None:
    """The identity a render of the soul uses, as an order carries it: the locked version
    ``pinned`` (a request's ``identity_version``: 422 when it is not one), else the soul's
    latest locked version; None without one."""
    use: IdentityUse | None = await catalog.identity_use.remote(soul_id, pinned)
    return use


def version_of(use: IdentityUse | None) -> int | None:
    """The identity version an order is made with (None: without an identity)."""
    return None if use is None else use.version


def stamped_version(variant: Variant) -> int | None:
    """The identity version a variant was made with (None: without one, or before the lock)."""
    stamp = variant.meta.get("identity")
    return stamp.get("version") if isinstance(stamp, dict) else None


def made_with(variant: Variant, version: int | None) -> bool:
    """Whether a stored variant may be served to a request that renders with identity
    ``version`` (None: the soul has no locked identity): only variants made with that very
    version, so a cache hit never shows another version's face, nor one from before the lock."""
    return stamped_version(variant) == version


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
