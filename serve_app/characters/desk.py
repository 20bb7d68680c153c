"""The identity routes' logic, without HTTP: versions made, edited and read through the
Catalog's identities facet; reference images checked and stored before their keys are added
(a refused image writes nothing); a lock that asks the judge (Dedupe) for the references'
anchors; any image scored against a locked version.

Ownership: souls are shared by every API client (as their styles are); an identity version
belongs to the client that made it: only that client edits it, adds references, generates its
sheet or locks it (403 for the others). Every client reads versions and scores against them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from serve_app.characters.identities import IdentityDraft, IdentityVersion, NoIdentityVersion
from serve_app.characters.verdicts import IdentityAnchors, IdentityThresholds, Verdict
from serve_app.errors import Conflict
from serve_app.ids import new_ulid
from serve_app.references import ReferenceImage
from serve_app.storage.objects import ObjectStore


def identity_reference_key(soul_id: str, version: int) -> str:
    return f"soul/{soul_id}/identity/{version}/reference/{new_ulid()}.png"


class CharacterDesk:
    """``catalog``: the Catalog's handle; ``dedupe``: the judge's; ``thresholds``: the live
    identity thresholds (the Ingress's config)."""

    def __init__(
        self,
        catalog: Any,
        dedupe: Any,
        objects: ObjectStore,
        thresholds: Callable[[], IdentityThresholds],
    ) -> None:
        self.catalog, self.dedupe, self.objects = catalog, dedupe, objects
        self.thresholds = thresholds

    async def create(self, soul_id: str, draft: IdentityDraft, owner: str) -> IdentityVersion:
        made: IdentityVersion = await self.catalog.create_identity.remote(soul_id, draft, owner)
        return made

    async def versions(self, soul_id: str) -> list[IdentityVersion]:
        versions: list[IdentityVersion] = await self.catalog.list_identities.remote(soul_id)
        return versions

    async def get(self, soul_id: str, version: int) -> IdentityVersion:
        found: IdentityVersion = await self.catalog.get_identity.remote(soul_id, version)
        return found

    async def edit(
        self, soul_id: str, version: int, draft: IdentityDraft, owner: str
    ) -> IdentityVersion:
        changed: IdentityVersion = await self.catalog.edit_identity.remote(
            soul_id, version, draft, owner
        )
        return changed

    async def add_references(
        self, soul_id: str, version: int, images: list[ReferenceImage], owner: str
    ) -> IdentityVersion:
        """Store checked images and add them to an unlocked version of the caller's. Refused
        before anything is written when the version is not theirs or is locked; the objects
        are removed again when it was locked meanwhile."""
        await self.catalog.editable_identity.remote(soul_id, version, owner)
        keys = [identity_reference_key(soul_id, version) for _ in images]
        await asyncio.gather(
            *(
                asyncio.to_thread(self.objects.put, k, i.png)
                for k, i in zip(keys, images, strict=True)
            )
        )
        try:
            changed: IdentityVersion = await self.catalog.add_identity_references.remote(
                soul_id, version, keys, owner
            )
        except BaseException:
            await asyncio.gather(*(asyncio.to_thread(self.objects.delete, k) for k in keys))
            raise
        return changed

    async def lock(self, soul_id: str, version: int, owner: str) -> IdentityVersion:
        """Compute the anchors of the version's references and freeze it with them."""
        current: IdentityVersion = await self.catalog.editable_identity.remote(
            soul_id, version, owner
        )
        if not current.references:
            raise Conflict(
                f"identity version {version} of soul {soul_id!r} has no references: add "
                "some (upload, URL or sheet) before locking it"
            )
        images = await asyncio.gather(
            *(asyncio.to_thread(self.objects.get, k) for k in current.references)
        )
        anchors: IdentityAnchors = await self.dedupe.identity_anchors.remote(list(images))
        locked: IdentityVersion = await self.catalog.lock_identity.remote(
            soul_id, version, anchors, current.updated_at_ts, owner
        )
        return locked

    async def score(
        self, soul_id: str, image: ReferenceImage, version: int | None
    ) -> tuple[int, Verdict]:
        """An image judged against ``version`` (which must be locked) or the latest locked
        one: that version's number and the verdict."""
        judged: IdentityVersion | None = await self.catalog.locked_identity.remote(soul_id, version)
        if judged is None or judged.anchors is None:
            raise NoIdentityVersion(soul_id)
        verdict: Verdict = await self.dedupe.judge_identity.remote(
            image.png, judged.anchors, self.thresholds()
        )
        return judged.version, verdict
