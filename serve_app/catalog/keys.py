"""The keys facet: a cue's prompt key (exact, or the nearest similar one), a soul's keys page by
page, and the rebuild of a soul's keys (``POST /admin/rebuild_prompt_key``, worked on as a job).
Each soul's index of keys is ``key_index.SoulIndexes``."""

from __future__ import annotations

import asyncio

import numpy as np

from serve_app.catalog.claims import Claims
from serve_app.catalog.identities import identity_for
from serve_app.catalog.key_index import REBUILT
from serve_app.catalog.key_vectors import KeyIndex, as_unit_vector
from serve_app.ids import new_ulid, now_ms
from serve_app.prompts import cue_part, key_hash, may_share_key, normalize, pk_id
from serve_app.schemas import KeyLookup, PromptKey

# An approximate index's score is off by a few thousandths: a key scoring this far below the
# threshold is read and scored on its stored vector; further below, it is not read at all.
APPROXIMATION_MARGIN = 0.02


class PromptKeys(Claims):
    async def lookup(
        self,
        soul_id: str,
        cue: str,
        user_id: str | None = None,
        via: str = "",
        identity_version: int | None = None,
    ) -> KeyLookup | None:
        """Normalize ``cue`` in the soul's style, read its exact key and the identity a render
        uses (``identity_version`` pinned, else the latest locked); None: unknown soul.

        With ``user_id``, an existing key's oldest unseen variant made with that identity is
        claimed in the same call: the cache-hit path is one round trip. ``via``: the job item
        the claim is for, if any. A pin that is not a locked version is refused (422) before
        anything is claimed.
        """
        style = await self.store.get_style(soul_id)
        if style is None:  # an unknown soul, or one whose style was deleted
            if await self.store.get_soul(soul_id) is None:
                return None
            return KeyLookup(style=None, key_norm="", cue_text="", key=None)
        identity = await identity_for(self.store, soul_id, identity_version)
        version = None if identity is None else identity.version
        key_norm, cue_text = normalize(cue, style.style_tags)
        key = await self.store.get_prompt_key(pk_id(soul_id, key_norm))
        claimed = None
        if key and user_id:
            claimed = await self.claim_unseen(key.pk_id, user_id, via, version)
        return KeyLookup(
            style=style,
            key_norm=key_norm,
            cue_text=cue_text,
            key=key,
            claimed=claimed,
            identity=identity,
        )

    async def get_prompt_key(self, pk_id: str) -> PromptKey | None:
        return await self.store.get_prompt_key(pk_id)

    async def keys_page(self, soul_id: str, after: str, limit: int) -> list[tuple[PromptKey, int]]:
        """A page of the soul's prompt keys, each with its number of variants."""
        keys = await self.store.prompt_keys_page(soul_id, after, limit)
        return [(key, await self.store.count_variants(key.pk_id)) for key in keys]

    async def resolve_similar(
        self, soul_id: str, key_norm: str, embedding: list[float]
    ) -> tuple[PromptKey, float | None]:
        """Reuse the nearest key at cosine >= threshold that says the same of every contrast
        (colour, count, place, time), else create this key with its vector."""
        exact = await self.store.get_prompt_key(pk_id(soul_id, key_norm))
        if exact is not None:
            return exact, 1.0
        vector = as_unit_vector(embedding)
        index = await self.indexes.get(soul_id)
        reusable, score = await self._nearest_key(index, key_norm, vector)
        # Before creating a key, learn the keys other catalog replicas created since.
        if reusable is None and await self.indexes.catch_up(index):
            reusable, score = await self._nearest_key(index, key_norm, vector)
        if reusable is not None:
            return reusable, score
        key = PromptKey(
            pk_id=pk_id(soul_id, key_norm),
            soul_id=soul_id,
            key_norm=key_norm,
            key_hash=key_hash(key_norm),
            key_embed=vector.tobytes(),
            updated_at_ts=now_ms(),
        )
        # The log entry first: a key row never stands without the entry other replicas learn
        # it from (an entry whose key write failed is skipped; a retry logs the key anew).
        await self.store.log_prompt_key(soul_id, new_ulid(), key.pk_id)
        await self.store.upsert_prompt_key(key)
        index.add([(key.pk_id, vector.tobytes())])
        await self.indexes.added(index)
        return key, score

    async def _nearest_key(
        self, index: KeyIndex, key_norm: str, vector: np.ndarray
    ) -> tuple[PromptKey | None, float | None]:
        """The nearest key's cosine, on its stored vector, and the key if it may be reused."""
        nearest = index.nearest(vector)
        threshold = self.config.similarity_threshold
        if nearest is None or nearest[1] < threshold - APPROXIMATION_MARGIN:
            return None, nearest[1] if nearest else None
        key = await self.store.get_prompt_key(nearest[0])
        if key is None or not key.key_embed:
            return None, None
        score = float(np.dot(np.frombuffer(key.key_embed, dtype=np.float32), vector))
        reusable = may_share_key(score, threshold, cue_part(key_norm), cue_part(key.key_norm))
        return (key if reusable else None), score

    async def ensure_key(self, soul_id: str, key_norm: str) -> PromptKey:
        """An exact prompt key, created if missing; no embedding, so similarity never picks it."""
        key = await self.store.get_prompt_key(pk_id(soul_id, key_norm))
        if key is None:
            key = PromptKey(
                pk_id=pk_id(soul_id, key_norm),
                soul_id=soul_id,
                key_norm=key_norm,
                key_hash=key_hash(key_norm),
                updated_at_ts=now_ms(),
            )
            await self.store.upsert_prompt_key(key)
        return key

    # Rebuilding a soul's keys.
    async def count_prompt_keys(self, soul_id: str) -> int:
        return await self.store.count_prompt_keys(soul_id)

    async def key_texts_page(
        self, soul_id: str, after: str, limit: int
    ) -> list[tuple[str, str, bool]]:
        return await self.store.key_texts_page(soul_id, after, limit)

    async def rewrite_keys(self, keys: list[tuple[str, str, list[float]]]) -> None:
        """Each key (pk_id, key_norm, embedding) with its text and embedding recomputed; its
        id and its variants stay."""
        ts = now_ms()
        for pk, key_norm, embedding in keys:
            await self.store.rewrite_prompt_key(
                pk, key_norm, as_unit_vector(embedding).tobytes(), ts
            )

    async def swap_key_index(self, soul_id: str) -> dict[str, int | str]:
        """After a rewrite of the soul's keys: a marker in its key log tells every replica to
        build its index anew (this one now, the others when they next read the log); each
        serves with its current index until the new one is swapped in."""
        marker = new_ulid()
        await self.store.log_prompt_key(soul_id, marker, REBUILT)
        index = await asyncio.shield(self.indexes.rebuild_soon(soul_id, marker))
        return {"index": "exact" if index.exact else "approximate", "index_keys": len(index)}
