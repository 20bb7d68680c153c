"""The identities facet: a soul's identity versions. A new version takes the next number (a
lost race for it retries with the one after); an unlocked version is changed by its maker only,
each change fenced on the version it read; locking stores the anchors and freezes it."""

from __future__ import annotations

from collections.abc import Callable

from serve_app.catalog.facet import Facet
from serve_app.characters.identities import (
    IdentityChanged,
    IdentityDraft,
    IdentityLocked,
    IdentityNotLocked,
    IdentityVersion,
    NoIdentityVersion,
    NotIdentityOwner,
    PinMissing,
    PinNotLocked,
    edited,
    new_version,
)
from serve_app.characters.report import ConsistencyReport, consistency_report
from serve_app.characters.uses import use_of
from serve_app.characters.verdicts import IdentityAnchors, IdentityUse
from serve_app.errors import Busy, InvalidRequest, UnknownSoul
from serve_app.ids import first_ulid_of, now_ms
from serve_app.storage.tables import CatalogStore

ATTEMPTS = 8  # concurrent writers of one soul's versions, before the client is told to retry


class Identities(Facet):
    async def create_identity(
        self, soul_id: str, draft: IdentityDraft, owner: str
    ) -> IdentityVersion:
        """The soul's next version, unlocked; ``parent`` must be one of its versions."""
        if await self.store.get_soul(soul_id) is None:
            raise UnknownSoul(soul_id)
        if (
            draft.parent is not None
            and await self.store.get_identity(soul_id, draft.parent) is None
        ):
            raise InvalidRequest(f"parent: soul {soul_id!r} has no identity version {draft.parent}")
        for _ in range(ATTEMPTS):
            number = await self.store.last_identity_version(soul_id) + 1
            ts = now_ms()
            made = new_version(soul_id, number, draft, owner).model_copy(
                update={"created_at_ts": ts, "updated_at_ts": ts}
            )
            if await self.store.insert_identity(made):
                return made
        raise Busy(f"soul {soul_id!r}: too many concurrent new identity versions; retry")

    async def list_identities(self, soul_id: str) -> list[IdentityVersion]:
        """A soul's versions, oldest first (each names its parent: the lineage)."""
        if await self.store.get_soul(soul_id) is None:
            raise UnknownSoul(soul_id)
        return await self.store.list_identities(soul_id)

    async def get_identity(self, soul_id: str, version: int) -> IdentityVersion:
        found = await self.store.get_identity(soul_id, version)
        if found is None:
            raise NoIdentityVersion(soul_id, version)
        return found

    async def editable_identity(self, soul_id: str, version: int, owner: str) -> IdentityVersion:
        """A version its caller may change: unlocked (409 otherwise) and theirs (403)."""
        found = await self.get_identity(soul_id, version)
        if found.owner != owner:
            raise NotIdentityOwner(soul_id, version)
        if found.locked:
            raise IdentityLocked(soul_id, version)
        return found

    async def edit_identity(
        self, soul_id: str, version: int, draft: IdentityDraft, owner: str
    ) -> IdentityVersion:
        if draft.parent is not None and draft.parent >= version:
            raise InvalidRequest(f"parent: a version's parent is an earlier version ({version})")
        return await self._change(soul_id, version, owner, lambda v: edited(v, draft))

    async def add_identity_references(
        self, soul_id: str, version: int, keys: list[str], owner: str
    ) -> IdentityVersion:
        """Append reference images (object keys) to an unlocked version."""
        return await self._change(
            soul_id,
            version,
            owner,
            lambda v: v.model_copy(update={"references": [*v.references, *keys]}),
        )

    async def lock_identity(
        self, soul_id: str, version: int, anchors: IdentityAnchors, read_ts: int, owner: str
    ) -> IdentityVersion:
        """Freeze the version as it was at ``read_ts`` (when its anchors were computed from its
        references): 409 when it changed since, so anchors always match the references."""
        current = await self.editable_identity(soul_id, version, owner)
        locked = current.model_copy(
            update={
                "state": "locked",
                "anchors": anchors,
                "updated_at_ts": max(now_ms(), read_ts + 1),
            }
        )
        if current.updated_at_ts != read_ts or not await self.store.update_identity(
            locked, read_ts
        ):
            raise IdentityChanged(soul_id, version)
        return locked

    async def locked_identity(self, soul_id: str, version: int | None) -> IdentityVersion | None:
        """The version a render of the soul uses: ``version`` (which must be locked), else the
        latest locked one, else None (the soul has no identity yet)."""
        if version is not None:
            pinned = await self.get_identity(soul_id, version)
            if not pinned.locked:
                raise IdentityNotLocked(soul_id, version)
            return pinned
        versions = await self.store.list_identities(soul_id)
        return next((v for v in reversed(versions) if v.locked), None)

    async def identity_use(self, soul_id: str, pinned: int | None) -> IdentityUse | None:
        """The identity a render of the soul uses (``identity_for``)."""
        return await identity_for(self.store, soul_id, pinned)

    async def _change(
        self,
        soul_id: str,
        version: int,
        owner: str,
        change: Callable[[IdentityVersion], IdentityVersion],
    ) -> IdentityVersion:
        for _ in range(ATTEMPTS):
            current = await self.editable_identity(soul_id, version, owner)
            ts = max(now_ms(), current.updated_at_ts + 1)
            changed = change(current).model_copy(update={"updated_at_ts": ts})
            if await self.store.update_identity(changed, current.updated_at_ts):
                return changed
        raise Busy(f"identity version {version} of soul {soul_id!r} is busy; retry")

    async def identity_report(
        self, soul_id: str, version: int | None, since_ms: int, after: str, limit: int
    ) -> ConsistencyReport:
        """Per version, the verdicts of the soul's variants made since ``since_ms``, and a page
        of the flagged ones after the cursor ``after``."""
        if await self.store.get_soul(soul_id) is None:
            raise UnknownSoul(soul_id)
        variants = await self.store.soul_variants_since(soul_id, first_ulid_of(since_ms))
        return consistency_report(soul_id, variants, version, after, limit)


async def identity_for(store: CatalogStore, soul_id: str, pinned: int | None) -> IdentityUse | None:
    """The identity a render of the soul uses, as an order carries it: the locked version a
    request pins (``identity_version``; 422 when the soul has no such version, or it is not
    locked), else its latest locked version, else None. Read by the keys facet's lookup too,
    so a cache hit is filtered on it in the same call."""
    if pinned is not None:
        found = await store.get_identity(soul_id, pinned)
        if found is None:
            raise PinMissing(soul_id, pinned)
        if not found.locked:
            raise PinNotLocked(soul_id, pinned)
        return use_of(found)
    versions = await store.list_identities(soul_id)
    latest = next((v for v in reversed(versions) if v.locked), None)
    return None if latest is None else use_of(latest)
