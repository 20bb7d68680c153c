"""The locks facet: work shared across replicas, a lock row with a TTL (best effort; stamped by
this clock), and the liveness rows of replicas and job workers."""

from __future__ import annotations

import logging

from serve_app.catalog.facet import Facet
from serve_app.ids import now_ms

log = logging.getLogger("ray.serve")
REPLICA_LOCK = "replica:"  # + replica id: a lock row that says the replica is alive
WORKER_LOCK = "worker:"  # + worker id: a lock row that says the job worker is alive


class WorkLocks(Facet):
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

    async def worker_alive(self, owner: str, ttl_ms: int) -> None:
        """A job worker says it lives, until ``ttl_ms`` from now (estimates count live ones)."""
        await self.store.try_lock(f"{WORKER_LOCK}{owner}", owner, now_ms(), ttl_ms)

    async def worker_gone(self, owner: str) -> None:
        await self.store.unlock(f"{WORKER_LOCK}{owner}", owner)
