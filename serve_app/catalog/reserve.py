"""The reserve facet: which prompt keys are hot, how far each is from its depth, and the
refills it queues (jobs of kind ``reserve``, ``jobs/kinds/reserve.py``).

    count:   every claim asked of a key is counted in this replica's ``DemandCounters``
             (``claims``), with how many variants the asking user will have had
    flush:   every ``every_s``, the counters of the keys asked of since are written, one
             single-row upsert per key (``key_demand``); rows that decayed to nothing are dropped
    plan:    one replica at a time (a ``work_lock`` row): the hottest keys, each short of
             ``depth`` unseen variants ahead of its most demanding recent user, get one refill
             job each in the reserve lane, below every user's job; no key has two queued, and
             the reserve client's quota and submit rate are ``max_keys`` and ``refills_per_min``
    budget:  nothing is queued, and a queued refill renders nothing, once today's spend reaches
             the daily budget's warning level (``cost.warn_at``)

A refill renders under the key's work lock and asks ``reserve_short`` there first, so two
workers never take a key past its depth. A key's variants count when its next users can be
served them: for a soul with a locked identity, those made with its latest locked version.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

from serve_app.catalog.demand import KeyDemand, decayed, per_minute
from serve_app.catalog.identities import identity_for
from serve_app.catalog.jobs import Jobs
from serve_app.catalog.ledger import utc_day
from serve_app.characters.uses import made_with
from serve_app.ids import now_ms
from serve_app.jobs.spec import RESERVE_CLIENT, RESERVE_LANE
from serve_app.metrics import count, gauge

log = logging.getLogger("ray.serve")
PLAN_LOCK = "reserve:plan"


class Reserve(Jobs):
    async def flush_demand(self) -> int:
        """Write this replica's counters of the keys asked of since the last flush."""
        counters = self.demand
        written = 0
        for pk_id, tally in counters.due(now_ms()):
            await self.store.put_demand(
                pk_id, counters.replica_id, tally.requests, tally.top_seen, tally.at_ms
            )
            written += 1
        return written

    async def hot_keys(self) -> list[KeyDemand]:
        """The keys at or above ``hot_per_min``, hottest first, ``max_keys`` at most."""
        cfg, ts = self.config.reserve, now_ms()
        demands = [d for d in await self._demands(ts) if d.per_min >= cfg.hot_per_min]
        return sorted(demands, key=lambda d: -d.per_min)[: cfg.max_keys]

    async def _demands(self, ts: int, pk_id: str | None = None) -> list[KeyDemand]:
        """Every key's demand (or one key's), its replicas' rows decayed to ``ts`` and added."""
        half_life = self.config.reserve.half_life_s
        by_key: dict[str, list[tuple[float, float]]] = {}
        rows = await (self.store.demand_rows() if pk_id is None else self.store.demand_of(pk_id))
        for row in rows:
            age = ts - row["updated_at_ts"]
            requests = decayed(row["requests"], age, half_life)
            if requests < 0.01:
                await self.store.drop_demand(row["pk_id"], row["replica_id"], row["updated_at_ts"])
                continue
            seen = decayed(row["top_seen"], age, half_life)
            by_key.setdefault(row["pk_id"], []).append((requests, seen))
        return [
            KeyDemand(pk, per_minute(sum(r for r, _ in rows), half_life), max(s for _, s in rows))
            for pk, rows in by_key.items()
        ]

    async def reserve_short(self, pk_id: str) -> int:
        """Variants the key lacks now to be ``depth`` ahead of its most demanding recent user;
        0 when the reserve is off, the budget's warning level is reached, or the key is cold."""
        cfg, ts = self.config.reserve, now_ms()
        if not cfg.enabled or await self._over_budget(ts):
            return 0
        demand = next(iter(await self._demands(ts, pk_id)), None)
        if demand is None or demand.per_min < cfg.hot_per_min:
            return 0
        return max(0, demand.short_of(await self._servable(pk_id), cfg.depth))

    async def plan_reserve(self) -> list[str]:
        """Queue a refill for each hot key short of its depth that has none queued; the keys
        refilled."""
        cfg, ts = self.config.reserve, now_ms()
        if not cfg.enabled or await self._over_budget(ts):
            return []
        queued = await self._refilling()
        planned: list[str] = []
        for demand in await self.hot_keys():
            variants = await self._servable(demand.pk_id)
            ahead = max(0.0, variants - demand.top_seen)
            gauge("soul_reserve_depth", ahead, pk_id=demand.pk_id)
            if demand.pk_id in queued or demand.short_of(variants, cfg.depth) <= 0:
                continue
            spec = {"kind": "reserve", "soul_id": demand.pk_id.partition(":")[0],
                    "pk_id": demand.pk_id}  # fmt: skip
            submitted = await self.submit_job(
                RESERVE_CLIENT, spec, 1, 1, cfg.max_keys, cfg.refills_per_min, RESERVE_LANE
            )
            if submitted.doc is None:  # the quota or the rate: the next plan goes on
                break
            planned.append(demand.pk_id)
        return planned

    async def _servable(self, pk_id: str) -> int:
        """The key's variants its next users can be served: all of them for a soul without a
        locked identity, else those made with its latest locked version (not those of an older
        version, nor from before the lock)."""
        identity = await identity_for(self.store, pk_id.partition(":")[0], None)
        if identity is None:
            return await self.store.count_variants(pk_id)
        variants = await self.store.list_variants(pk_id)
        return sum(made_with(v, identity.version) for v in variants)

    async def _refilling(self) -> set[str]:
        """The keys with a refill queued or running."""
        entries = await self._unfinished(RESERVE_LANE, RESERVE_CLIENT)
        rows = [await self.store.get_job(e["client_id"], e["job_id"]) for e in entries]
        return {_pk_of(row) for row in rows if row is not None}

    async def _over_budget(self, ts: int) -> bool:
        if self.ledger.config.daily_budget_usd is None:
            return False
        over = self.ledger.over_warning(await self.store.day_cost_usd(utc_day(ts)))
        if over:
            count("soul_reserve_budget_stops")
        return over

    async def _reserve_forever(self) -> None:
        """Flush, and plan when this replica holds the plan lock; every ``every_s``."""
        owner = self.demand.replica_id
        while True:
            every_s = self.config.reserve.every_s
            await asyncio.sleep(every_s)
            try:
                await self.flush_demand()
                if self.config.reserve.enabled and await self.store.try_lock(
                    PLAN_LOCK, owner, now_ms(), int(every_s * 1000)
                ):
                    await self.plan_reserve()
            except Exception:  # the store is restarting: the next turn tries again
                log.warning("reserve: flush or plan failed", exc_info=True)


def _pk_of(row: Mapping[str, Any]) -> str:
    spec: dict[str, Any] = json.loads(row["spec_json"])
    return str(spec.get("pk_id", ""))
