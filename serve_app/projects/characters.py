"""A character asset that is a soul's identity (``soul_id`` on its spec or a new version).

asked    ``soul_id``, and optionally ``identity_version``, on a character only; the soul must
         exist and a version asked for must be one of its locked versions (422 naming the
         field), checked before anything is written
lock     locking the asset's version pins the soul's locked identity version as its anchor:
         the one asked for, else the soul's latest locked one at that moment (409 when the
         soul has none yet); the pin is part of the locked version and never changes
render   a render of the version uses that identity version (its conditioning), as
         ``GET /image?identity_version=`` does; an unlocked version without a pin uses the
         soul's latest locked one, as an unpinned request does
"""

from __future__ import annotations

from typing import Any

from serve_app.catalog.identities import identity_for
from serve_app.characters.uses import identity_of
from serve_app.characters.verdicts import IdentityUse
from serve_app.errors import Conflict, InvalidRequest
from serve_app.projects.models import AssetVersion
from serve_app.storage.tables import CatalogStore


class NoLockedIdentity(Conflict):
    """A character asset's soul has no locked identity version to pin at the lock."""

    def __init__(self, soul_id: str) -> None:
        super().__init__(
            f"soul_id: soul {soul_id!r} has no locked identity version to pin; lock one first"
        )


async def check_character(
    store: CatalogStore, asset_type: str, soul_id: str | None, identity_version: int | None
) -> None:
    """Refuse (422, naming the field) a soul pin that is not a character's, a soul that does not
    exist, or a version of it that is not locked."""
    if soul_id is None and identity_version is None:
        return
    if asset_type != "character":
        raise InvalidRequest("soul_id: only a character pins a soul's identity")
    if soul_id is None:
        raise InvalidRequest("identity_version: the asset pins no soul; give soul_id too")
    if await store.get_soul(soul_id) is None:
        raise InvalidRequest(f"soul_id: no soul {soul_id!r}")
    if identity_version is not None:
        await identity_for(store, soul_id, identity_version)  # PinMissing, PinNotLocked: 422


async def pin_at_lock(store: CatalogStore, version: AssetVersion) -> int | None:
    """The identity version a lock pins on ``version``: the one it asks for, else the soul's
    latest locked one (``NoLockedIdentity`` without one); None for an asset without a soul."""
    if version.soul_id is None:
        return None
    if version.identity_version is not None:
        return version.identity_version
    versions = await store.list_identities(version.soul_id)
    latest = next((v for v in reversed(versions) if v.locked), None)
    if latest is None:
        raise NoLockedIdentity(version.soul_id)
    return latest.version


async def identity_use(store: CatalogStore, version: AssetVersion) -> IdentityUse | None:
    """The identity a render of ``version`` uses (None: the asset has no soul, or nothing to
    condition on yet)."""
    if version.soul_id is None:
        return None
    return await identity_for(store, version.soul_id, version.identity_version)


async def rendered_with(catalog: Any, version: AssetVersion) -> IdentityUse | None:
    """``identity_use`` through the Catalog's handle: what a job's render of ``version`` is
    conditioned on."""
    if version.soul_id is None:
        return None
    return await identity_of(catalog, version.soul_id, version.identity_version)
