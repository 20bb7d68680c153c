"""Work locks across replicas (``work_lock`` rows with a TTL), and this replica's heartbeat.

- A lock is held by ``<replica>/<ulid>``, renewed every third of ``lock_ttl_s`` while its work
  runs, and released after it (else it expires after its TTL).
- A waiter polls every ``lock_poll_s`` and gives up with a 503 after ``lock_wait_s``.
- The replica says it lives (``replica_alive``) every third of ``replica_ttl_s``, so the catalog
  can hand a dead replica's locks over at once instead of after their TTL. It says so only while
  it holds or is taking a lock: the first beat is written before the first lock is tried, the
  beat stops when the last lock is released, and an idle replica makes no catalog calls.
- The beat is a task of no request (an empty context): a departed request does not stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import AsyncIterator
from typing import Any

from serve_app.delivery.config import DeliveryConfig
from serve_app.errors import Busy
from serve_app.ids import new_ulid


class WorkLocks:
    def __init__(self, catalog: Any, config: DeliveryConfig) -> None:
        self.catalog = catalog
        self.config = config
        self.replica_id = new_ulid()  # the owner of these locks
        self._holding = 0  # locks held or being taken
        self._beat: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def hold(self, lock_key: str) -> AsyncIterator[None]:
        """Hold the ``work_lock`` row (waiting while another owner has it), renewed meanwhile."""
        self._holding += 1
        try:
            await self._beating()
            owner, ttl_ms = f"{self.replica_id}/{new_ulid()}", int(self.config.lock_ttl_s * 1000)
            await self._take(lock_key, owner, ttl_ms)
            renewal = asyncio.create_task(self._renew(lock_key, owner, ttl_ms))
            try:
                yield
            finally:
                renewal.cancel()
                with contextlib.suppress(Exception):  # else it expires after its TTL
                    await self.catalog.unlock.remote(lock_key, owner)
        finally:
            self._holding -= 1
            if self._holding == 0 and self._beat is not None:
                self._beat.cancel()
                self._beat = None

    @property
    def beating(self) -> bool:
        """Whether this replica is saying it lives."""
        return self._beat is not None and not self._beat.done()

    async def _take(self, lock_key: str, owner: str, ttl_ms: int) -> None:
        deadline = time.monotonic() + self.config.lock_wait_s
        while not await self.catalog.try_lock.remote(lock_key, owner, ttl_ms):
            if time.monotonic() > deadline:
                raise Busy("another replica is still rendering this cue; retry", retry_after_s=5)
            await asyncio.sleep(self.config.lock_poll_s)

    async def _beating(self) -> None:
        """Say this replica lives, and keep saying it while it holds a lock."""
        if self.beating:
            return
        await self.catalog.replica_alive.remote(self.replica_id, self._replica_ttl_ms())
        if not self.beating:  # else another lock's first beat started it meanwhile
            self._beat = asyncio.get_running_loop().create_task(
                self._keep_alive(), context=contextvars.Context()
            )

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.config.replica_ttl_s / 3)
            with contextlib.suppress(Exception):  # a missed beat only risks a takeover
                await self.catalog.replica_alive.remote(self.replica_id, self._replica_ttl_ms())

    async def _renew(self, lock_key: str, owner: str, ttl_ms: int) -> None:
        while True:
            await asyncio.sleep(ttl_ms / 3000)
            with contextlib.suppress(Exception):  # a missed renewal only risks a duplicate render
                await self.catalog.try_lock.remote(lock_key, owner, ttl_ms)

    def _replica_ttl_ms(self) -> int:
        return int(self.config.replica_ttl_s * 1000)
