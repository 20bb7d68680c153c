"""Catalog: souls, styles, prompt keys (an index per soul), variants and seen-claims."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ulid import ULID

from serve_app.cost import CostConfig, Ledger
from serve_app.delivery.places import Used, choose_shot
from serve_app.errors import Gone, NotFound
from serve_app.ids import new_ulid, now_ms
from serve_app.jobs.book import JobBook
from serve_app.key_index import REBUILT, KeyIndex, KeyIndexConfig, SoulIndexes, as_unit_vector
from serve_app.metrics import count
from serve_app.prompts import cue_part, key_hash, may_share_key, normalize, pk_id
from serve_app.schemas import (
    CostDay,
    CostReport,
    IdempotentStart,
    KeyLookup,
    PromptKey,
    Soul,
    SoulSpec,
    StyleProfile,
    Variant,
)
from serve_app.settings import Settings
from serve_app.souls import load_souls
from serve_app.storage.objects import ObjectStore, open_object_store, remove_objects
from serve_app.storage.store import Store, StoreUnavailable, store_for

log = logging.getLogger("ray.serve")
REPLICA_LOCK = "replica:"  # + replica id: a lock row that says the replica is alive


class CatalogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    similarity_threshold: float = Field(
        default=0.85, ge=0.0, le=1.0, description="Cosine at or above which a cue reuses a key."
    )
    embedding_dim: int = Field(default=384, ge=1, description="Width of the Embedder's vectors.")
    index: KeyIndexConfig = Field(
        default_factory=KeyIndexConfig, description="Each soul's index of prompt keys."
    )
    sweep_every_s: float = Field(
        default=300,
        gt=0,
        description="How often expired work locks, idempotency records and orphan objects are "
        "deleted.",
    )
    orphan_grace_s: float = Field(
        default=3600,
        gt=0,
        description="Age after which a variant's objects without a variant row are orphans "
        "(keep it above the slowest render, animation and encode).",
    )
    cost: CostConfig = Field(
        default_factory=CostConfig,
        description="What a second of each deployment costs, and the daily budget.",
    )


# An approximate index's score is off by a few thousandths: a key scoring this far below the
# threshold is read and scored on its stored vector; further below, it is not read at all.
APPROXIMATION_MARGIN = 0.02


class CatalogEngine(JobBook):
    def __init__(
        self,
        store: Store,
        config: CatalogConfig | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        """``objects``: where snapshots of large souls' key indexes are kept, if anywhere."""
        super().__init__()
        self.store = store
        self.objects = objects
        self.config = config or CatalogConfig()
        self.indexes = SoulIndexes(store, objects, self.config.embedding_dim, self.config.index)
        self.ledger = Ledger(self.config.cost)

    async def start(self, souls: list[SoulSpec]) -> None:
        """Open the store and seed souls idempotently: styles only where none exists yet."""
        await self.store.open()
        ts = now_ms()
        for spec in souls:
            await self.store.upsert_soul(
                Soul(soul_id=spec.soul_id, display_name=spec.display_name), ts
            )
            await self.store.insert_style_if_absent(
                spec.style.model_copy(update={"updated_at_ts": 1})
            )

    def configure(self, config: CatalogConfig) -> None:
        self.config = config
        self.indexes.config = config.index
        self.ledger.config = config.cost

    async def close(self) -> None:
        await self.indexes.close()
        await self.store.close()

    async def ping(self) -> None:
        await self.store.ping()

    async def get_soul(self, soul_id: str) -> Soul | None:
        return await self.store.get_soul(soul_id)

    # Styles (last write wins).
    async def get_style(self, soul_id: str) -> StyleProfile | None:
        return await self.store.get_style(soul_id)

    async def list_styles(self) -> list[StyleProfile]:
        return await self.store.list_styles()

    async def put_style(self, style: StyleProfile) -> StyleProfile | None:
        """Upsert; returns the profile that stands afterwards, or None for an unknown soul."""
        if await self.store.get_soul(style.soul_id) is None:
            return None
        await self.store.upsert_style(style.model_copy(update={"updated_at_ts": now_ms()}))
        return await self.store.get_style(style.soul_id)

    async def delete_style(self, soul_id: str) -> bool:
        return await self.store.delete_style(soul_id, now_ms())

    # Prompt keys.
    async def lookup(
        self, soul_id: str, cue: str, user_id: str | None = None, via: str = ""
    ) -> KeyLookup | None:
        """Normalize ``cue`` in the soul's style, read its exact key; None: unknown soul.

        With ``user_id``, an existing key's oldest unseen variant is claimed in the same call:
        the cache-hit path is one round trip. ``via``: the job item the claim is for, if any.
        """
        style = await self.store.get_style(soul_id)
        if style is None:  # an unknown soul, or one whose style was deleted
            if await self.store.get_soul(soul_id) is None:
                return None
            return KeyLookup(style=None, key_norm="", cue_text="", key=None)
        key_norm, cue_text = normalize(cue, style.style_tags)
        key = await self.store.get_prompt_key(pk_id(soul_id, key_norm))
        claimed = await self.claim_unseen(key.pk_id, user_id, via) if key and user_id else None
        return KeyLookup(
            style=style, key_norm=key_norm, cue_text=cue_text, key=key, claimed=claimed
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

    # Rebuilding a soul's keys (``POST /admin/rebuild_prompt_key``, worked on as a job).
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

    # Variants and user-unique delivery.
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
        claimed = []
        for user_id in claim_for:
            with contextlib.suppress(StoreUnavailable):
                ref = (via or {}).get(user_id, "")
                if await self.store.claim(
                    user_id, variant.variant_id, now_ms(), variant.pk_id, ref
                ):
                    claimed.append(user_id)
        return claimed

    async def cost_report(self, since: str, today: str) -> CostReport:
        """Spend per UTC day from ``since`` and soul, and today's against the budget."""
        rows = await self.store.cost_by_day(since)
        days = [
            CostDay(
                day=r["cost_day"],
                soul_id=r["soul_id"],
                variants=r["variants"],
                render_s=round(r["render_s"], 3),
                animate_s=round(r["animate_s"], 3),
                encode_s=round(r["encode_s"], 3),
                usd=round(r["usd"], 6),
            )
            for r in rows
        ]
        spent_today = await self.store.day_cost_usd(today)
        budget = self.config.cost.daily_budget_usd
        return CostReport(
            since=since,
            days=days,
            usd=round(sum(d.usd for d in days), 6),
            today_usd=round(spent_today, 6),
            daily_budget_usd=budget,
            budget_used=None if budget is None else round(spent_today / budget, 4),
            budget_warning=self.ledger.over_warning(spent_today),
        )

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

    async def users_lacking_unseen(self, pk_id: str, user_ids: list[str]) -> list[str]:
        """The users who have already seen every variant of the key: only they need a render."""
        variant_ids = [v.variant_id for v in await self.store.list_variants(pk_id)]
        return [
            u
            for u in user_ids
            if len(await self.store.seen_among(u, variant_ids)) == len(variant_ids)
        ]

    async def claim_unseen(self, pk_id: str, user_id: str, via: str = "") -> Variant | None:
        """Claim the oldest variant of the key this user has not seen; None when all are seen.

        The claim is one ``INSERT ... ON CONFLICT DO NOTHING RETURNING``: a lost race means a
        concurrent request of the same user took that variant, so try the next one.
        """
        variants = await self.store.list_variants(pk_id)
        seen = await self.store.seen_among(user_id, [v.variant_id for v in variants])
        for variant in variants:
            if variant.variant_id in seen:
                continue
            if await self.store.claim(user_id, variant.variant_id, now_ms(), pk_id, via):
                return variant
            count("soul_claim_races")
        return None

    # Selfies.
    async def choose_shot(
        self, soul_id: str, city_key: str, user_id: str, landmarks: list[str], angles: list[str]
    ) -> tuple[str, str] | None:
        """The user's next (landmark, angle) in the city, logged with one single-row write that
        only succeeds if nobody logged that landmark since we read: concurrent selfies of one
        user therefore get different shots. None: too many concurrent selfies to settle."""
        for _ in range(len(landmarks) + 4):
            used = {
                landmark: Used(used_at_ts=ts, angle_key=angle)
                for landmark, (ts, angle) in (
                    await self.store.landmarks_used(soul_id, city_key, user_id)
                ).items()
            }
            landmark, angle = choose_shot(landmarks, angles, used)
            seen = used.get(landmark)
            if_ts = seen.used_at_ts if seen else None
            # Strictly after every earlier shot: "least recently used" must not tie within a ms.
            ts = max([now_ms(), *(u.used_at_ts + 1 for u in used.values())])
            if await self.store.take_landmark(
                soul_id, city_key, user_id, landmark, angle, ts, if_ts
            ):
                return landmark, angle
        return None

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

    # Work shared across replicas: a lock row with a TTL (best effort; stamped by this clock).
    async def try_lock(self, lock_key: str, owner_id: str, ttl_ms: int) -> bool:
        """Take or renew the lock. An owner named ``<replica>/<id>`` holds it only while its
        replica is alive (``replica_alive``): a dead replica's lock is taken over at once
        instead of after its TTL."""
        ts = now_ms()
        if await self.store.try_lock(lock_key, owner_id, ts, ttl_ms):
            return True
        held = await self.store.get_lock(lock_key)
        if held is None or "/" not in held["owner_id"]:
            return False
        replica = held["owner_id"].partition("/")[0]
        beat = await self.store.get_lock(f"{REPLICA_LOCK}{replica}")
        if beat is not None and beat["expires_at_ts"] > ts:
            return False  # its replica lives: the lock is really held
        log.info("taking over %s from %s, whose replica is gone", lock_key, held["owner_id"])
        return await self.store.take_over_lock(lock_key, held["owner_id"], owner_id, ts, ttl_ms)

    async def replica_alive(self, replica: str, ttl_ms: int) -> None:
        """A replica that holds work locks says it lives, until ``ttl_ms`` from now."""
        await self.store.try_lock(f"{REPLICA_LOCK}{replica}", replica, now_ms(), ttl_ms)

    async def unlock(self, lock_key: str, owner_id: str) -> None:
        await self.store.unlock(lock_key, owner_id)

    # Idempotency-Key records: one row per key, changed only by compare-and-set.
    async def begin_request(
        self, idem_key: str, fingerprint: str, lease_ms: int
    ) -> IdempotentStart:
        """Record that a request with this key is running, or say why it must not run again.

        A record past its expiry (a crashed first attempt's lease, or a finished result past
        retention) is taken over as if it were absent.
        """
        for _ in range(4):  # each turn loses at most one race to a concurrent writer
            ts = now_ms()
            pending = _record("pending", fingerprint, expires_at_ts=ts + lease_ms)
            if await self.store.insert_idempotency(idem_key, pending, ts):
                return IdempotentStart(outcome="started", version=ts)
            found = await self.store.get_idempotency(idem_key)
            if found is None:
                continue
            record, version = json.loads(found[0]), found[1]
            if record["expires_at_ts"] <= ts:
                ts = max(ts, version + 1)
                pending = _record("pending", fingerprint, expires_at_ts=ts + lease_ms)
                if await self.store.replace_idempotency(idem_key, pending, ts, if_ts=version):
                    return IdempotentStart(outcome="started", version=ts)
                continue
            if record["fingerprint"] != fingerprint:
                return IdempotentStart(outcome="mismatch", version=version)
            if record["state"] == "done":
                return IdempotentStart(outcome="replay", version=version, result=record["result"])
            return IdempotentStart(outcome="in_flight", version=version)
        return IdempotentStart(outcome="in_flight")

    async def finish_request(
        self, idem_key: str, fingerprint: str, version: int, result: dict, retain_ms: int
    ) -> None:
        ts = max(now_ms(), version + 1)
        done = _record("done", fingerprint, expires_at_ts=ts + retain_ms, result=result)
        await self.store.replace_idempotency(idem_key, done, ts, if_ts=version)

    async def abandon_request(self, idem_key: str, version: int) -> None:
        """The first attempt failed: forget it, so a retry runs the request afresh."""
        await self.store.delete_idempotency(idem_key, if_ts=version)


# soul/<soul_id>/key/<key_hash>/variant/<variant_id>.<ext>: the objects of one variant.
VARIANT_OBJECT = re.compile(
    r"soul/(?P<soul>[a-z0-9][a-z0-9_-]*)/key/(?P<hash>[0-9a-f]{40})/variant/"
    r"(?P<variant>[0-9A-HJKMNP-TV-Z]{26})(\.[A-Za-z0-9]+)+"
)


class Sweeper:
    """Deletes what only waits to expire: work locks and idempotency records past their lease
    or retention (a page at a time, each delete a compare-and-set on the version read), and
    orphans: objects of a variant that never got its row (a replica died between the encode
    and the record), once older than ``grace_s``, so a variant still being made is left alone."""

    def __init__(
        self,
        store: Store,
        objects: ObjectStore | None = None,
        grace_s: float = 3600,
        page: int = 500,
    ) -> None:
        self.store, self.objects, self.grace_s, self.page = store, objects, grace_s, page

    async def sweep(self) -> dict[str, int]:
        swept = {
            "work_lock": await self._locks(),
            "idempotency": await self._records(),
            "objects": await self._orphans(),
        }
        for table, n in swept.items():
            count("soul_swept_rows", n, table=table)
        return swept

    async def _locks(self) -> int:
        swept, after = 0, ""
        while rows := await self.store.locks_after(after, self.page):
            ts = now_ms()
            for row in rows:
                if row["expires_at_ts"] <= ts:
                    swept += await self.store.drop_expired_lock(
                        row["lock_key"], row["owner_id"], row["expires_at_ts"]
                    )
            after = rows[-1]["lock_key"]
        return swept

    async def _records(self) -> int:
        swept, after = 0, ""
        while rows := await self.store.idempotency_after(after, self.page):
            ts = now_ms()
            for row in rows:
                if json.loads(row["result_json"])["expires_at_ts"] <= ts:
                    swept += await self.store.delete_idempotency(
                        row["idem_key"], row["updated_at_ts"]
                    )
            after = rows[-1]["idem_key"]
        return swept

    async def _orphans(self) -> int:
        if self.objects is None:
            return 0
        objects = self.objects
        stems: dict[tuple[str, str], list[str]] = {}
        for key in await asyncio.to_thread(objects.list, "soul/"):
            if found := VARIANT_OBJECT.fullmatch(key):
                pk = f"{found['soul']}:{found['hash']}"
                stems.setdefault((pk, found["variant"]), []).append(key)
        cutoff_ms = now_ms() - int(self.grace_s * 1000)
        swept = 0
        for (pk, variant_id), keys in stems.items():
            if ULID.from_str(variant_id).milliseconds > cutoff_ms:
                continue  # may still be on its way to its row
            variant = await self.store.get_variant(pk, variant_id)
            if variant is None or variant.deleted:
                for key in keys:
                    await asyncio.to_thread(objects.delete, key)
                swept += len(keys)
        return swept


def _record(state: str, fingerprint: str, expires_at_ts: int, result: dict | None = None) -> str:
    return json.dumps(
        {
            "state": state,
            "fingerprint": fingerprint,
            "expires_at_ts": expires_at_ts,
            "result": result,
        }
    )


@serve.deployment(name="Catalog", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class Catalog(CatalogEngine):
    """The engine itself is the deployment: Serve finds handle methods with ``getattr``, so
    every method of ``CatalogEngine`` is callable through a handle."""

    async def __init__(self, souls_file: str) -> None:  # type: ignore[misc]  # Serve awaits it
        settings = Settings()
        objects = open_object_store(settings)  # key index snapshots; orphans to sweep
        super().__init__(store_for(settings), objects=objects)
        await self.start(load_souls(souls_file))  # opens the store (and its pool)
        self._sweeping = asyncio.create_task(self._sweep_forever(objects))

    def reconfigure(self, config: dict) -> None:
        self.configure(CatalogConfig.model_validate(config))

    async def _sweep_forever(self, objects: ObjectStore) -> None:
        while True:
            await asyncio.sleep(self.config.sweep_every_s)
            sweeper = Sweeper(self.store, objects, self.config.orphan_grace_s)
            try:
                await sweeper.sweep()
            except Exception:  # the store is away: the next round sweeps what is left
                log.warning("sweeping expired rows failed", exc_info=True)

    async def __del__(self) -> None:
        self._sweeping.cancel()
        await self.close()
