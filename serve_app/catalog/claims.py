"""The claims facet: which variant each user was sent (``user_seen``). A variant goes to a user
at most once: a claim is one insert-if-absent, and a lost race means another request of the same
user took that variant. Only variants made with the identity version the request renders with
are claimed (``made_with``): another version's face, or one from before the lock, is never a
hit."""

from __future__ import annotations

import contextlib

from serve_app.catalog.facet import Facet
from serve_app.characters.uses import made_with
from serve_app.ids import now_ms
from serve_app.metrics import count
from serve_app.schemas import Variant
from serve_app.storage.store import StoreUnavailable


class Claims(Facet):
    async def claim_unseen(
        self, pk_id: str, user_id: str, via: str = "", identity: int | None = None
    ) -> Variant | None:
        """Claim the oldest variant of the key made with identity version ``identity`` (None:
        without one) that this user has not seen; None when all are seen.

        The claim is one ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a lost race means a
        concurrent request of the same user took that variant, so try the next one.
        """
        variants = [v for v in await self.store.list_variants(pk_id) if made_with(v, identity)]
        seen = await self.store.seen_among(user_id, [v.variant_id for v in variants])
        self.demand.note(pk_id, len(seen) + 1, now_ms())  # what the user will have had
        for variant in variants:
            if variant.variant_id in seen:
                continue
            if await self.store.claim(user_id, variant.variant_id, now_ms(), pk_id, via):
                if variant.meta.get("reserve"):
                    count("soul_reserve_hits", soul_id=variant.soul_id)
                return variant
            count("soul_claim_races")
        return None

    async def _claim_new(
        self, variant: Variant, users: list[str], via: dict[str, str]
    ) -> list[str]:
        """Claim a variant just written for each of ``users`` (each claim marked with the user's
        job item in ``via``, if any); the users it was claimed for. A claim that fails only
        leaves that user to claim a variant in their next round."""
        claimed = []
        for user_id in users:
            with contextlib.suppress(StoreUnavailable):
                if await self.store.claim(
                    user_id, variant.variant_id, now_ms(), variant.pk_id, via.get(user_id, "")
                ):
                    claimed.append(user_id)
        return claimed

    async def claimed_via(self, user_id: str, via: str) -> Variant | None:
        """The variant a job item already claimed for the user (a retried item delivers it);
        None too once it was deleted (the item delivers another)."""
        found = await self.store.claimed_via(user_id, via)
        variant = await self.store.get_variant(*found) if found else None
        return None if variant is None or variant.deleted else variant

    async def seen_page(
        self, user_id: str, before: str, limit: int
    ) -> tuple[list[tuple[Variant, int]], str | None]:
        """A page of what the user was sent, newest variant first, each with when it was sent
        (a deleted variant is left out: its history row stays), and the cursor of the next
        page (None: this was the last)."""
        rows = await self.store.seen_page(user_id, before, limit)
        found = [(await self.store.get_variant(r["pk_id"], r["variant_id"]), r) for r in rows]
        page = [(v, r["seen_at_ts"]) for v, r in found if v is not None and not v.deleted]
        return page, rows[-1]["variant_id"] if len(rows) == limit else None

    async def users_lacking_unseen(
        self, pk_id: str, user_ids: list[str], identity: int | None = None
    ) -> list[str]:
        """The users who have already seen every variant of the key made with identity version
        ``identity`` (None: without one): only they need a render."""
        variants = await self.store.list_variants(pk_id)
        variant_ids = [v.variant_id for v in variants if made_with(v, identity)]
        return [
            u
            for u in user_ids
            if len(await self.store.seen_among(u, variant_ids)) == len(variant_ids)
        ]
