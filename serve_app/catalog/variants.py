"""The variants facet: a variant's row (priced by the ledger as it is recorded), finding and
deleting variants. A deleted variant is a tombstone: never claimed again, by anyone, and who had
it keeps their history row."""

from __future__ import annotations

import asyncio
import contextlib

from serve_app.catalog.claims import Claims
from serve_app.errors import Gone, NotFound
from serve_app.ids import now_ms
from serve_app.schemas import Variant
from serve_app.storage.objects import remove_objects
from serve_app.storage.store import StoreUnavailable


class Variants(Claims):
    async def list_variants(self, pk_id: str) -> list[Variant]:
        return await self.store.list_variants(pk_id)

    async def put_variant(
        self, variant: Variant, claim_for: list[str], via: dict[str, str] | None = None
    ) -> list[str]:
        """Write the variant row, then claim it for ``claim_for`` (each claim marked with the
        user's job item in ``via``, if any); the users it was claimed for.

        Once the row is written the variant stands (its objects must stay): a claim that fails
        only leaves that user to claim a variant in their next round.
        """
        ts = now_ms()
        cost = None if variant.cost is None else self.ledger.priced(variant.cost, ts)
        fresh = cost is not None and not await self.store.get_variant(
            variant.pk_id, variant.variant_id
        )
        await self.store.upsert_variant(
            variant.model_copy(update={"updated_at_ts": ts, "cost": cost})
        )
        if fresh and cost is not None:  # a retried write is not spent twice
            with contextlib.suppress(StoreUnavailable):  # the day's sum only feeds the gauges
                self.ledger.spent(variant.soul_id, cost, await self.store.day_cost_usd(cost.day))
        return await self._claim_new(variant, claim_for, via or {})

    async def find_variant(self, variant_id: str) -> Variant:
        """The variant of this id: NotFound, or Gone once it was deleted."""
        variant = await self.store.find_variant(variant_id)
        if variant is None:
            raise NotFound(f"unknown variant {variant_id!r}")
        if variant.deleted:
            raise Gone(f"variant {variant_id!r} was deleted")
        return variant

    async def delete_variant(self, variant_id: str) -> None:
        """Tombstone the variant, then remove its objects: it is never claimed again, by
        anyone, and who had it keeps their history row. NotFound, or Gone when deleted."""
        await self._tombstone(await self.find_variant(variant_id))

    async def delete_key_variants(self, pk_id: str) -> int:
        """``delete_variant`` for every variant of the key (the key stays, and renders anew);
        how many were deleted."""
        if await self.store.get_prompt_key(pk_id) is None:
            raise NotFound(f"unknown prompt key {pk_id!r}")
        variants = await self.store.list_variants(pk_id)
        for variant in variants:
            await self._tombstone(variant)
        return len(variants)

    async def _tombstone(self, variant: Variant) -> None:
        # Newer than the row, so that it wins; objects first would leave a listed variant
        # without objects, and a removal that fails is the sweeper's (a tombstone's objects
        # are orphans).
        await self.store.delete_variant(variant, max(now_ms(), variant.updated_at_ts + 1))
        if self.objects is not None:
            await asyncio.to_thread(remove_objects, self.objects, variant.stem)
