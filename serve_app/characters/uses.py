"""Which identity a new variant of a soul is made with: the soul's latest locked version (its
anchors judge the render, its references and strength condition it), or none."""

from __future__ import annotations

from typing import Any

from serve_app.characters.identities import IdentityVersion
from serve_app.characters.verdicts import IdentityConditioning, IdentityUse


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
