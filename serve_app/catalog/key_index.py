"""The nearest prompt key of a soul: a faiss index per soul in each Catalog replica.

A small soul's index is exact. From ``approximate_from`` keys it is approximate (IVF over 8-bit
scalar-quantized vectors: a quarter of the memory, a few lists searched instead of every key),
and a snapshot of it is kept in the object store, so a fresh replica loads the snapshot and
replays the soul's key log after it instead of reading every key. A snapshot is only a
shortcut: a missing, damaged or outdated one costs a build from the keys, and every reuse is
decided on the key's stored vector, never on the index's approximate score.

When a soul's keys are re-embedded (``POST /admin/rebuild_prompt_key``), a marker entry in its
key log says so: a replica whose index was built before the marker builds a new one in the
background, serves with the old one meanwhile, and swaps the new one in when it is ready.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faiss

from serve_app.catalog.key_vectors import (
    KeyIndex,
    KeyIndexConfig,
    build_approximate,
    decode_snapshot,
    encode_snapshot,
)
from serve_app.ids import first_ulid_of, new_ulid, now_ms, ulid_ms
from serve_app.metrics import gauge
from serve_app.storage.objects import ObjectStore
from serve_app.storage.tables import CatalogStore

log = logging.getLogger("ray.serve")

# Catch-up rereads the key log this far behind its newest entry read (at most once a
# ``LOG_REREAD_MS``): a ULID is taken just before its entry's insert, and one taken earlier by
# another replica can commit later.
LOG_SLACK_MS = 10_000
LOG_REREAD_MS = 1_000
PAGE = 1_000
REBUILT = "rebuilt"  # the pk_id of a log entry saying every key before it was re-embedded


class SoulIndexes:
    """Each soul's ``KeyIndex`` in this replica: loaded once (from its snapshot and the log
    after it, or from the soul's keys), kept up to date from the log, made approximate past
    the switch point, snapshotted by one replica at a time (a lock row)."""

    def __init__(
        self,
        store: CatalogStore,
        objects: ObjectStore | None,
        dim: int,
        config: KeyIndexConfig | None = None,
    ) -> None:
        self.store, self.objects, self.dim = store, objects, dim
        self.config = config or KeyIndexConfig()
        self._loading: dict[str, asyncio.Future[KeyIndex]] = {}
        self._rebuilding: dict[str, asyncio.Task[KeyIndex]] = {}
        self._stale_since: dict[str, str] = {}  # the newest rebuild marker seen, per soul
        self._swapped_from: dict[str, str] = {}  # built_from of the index a rebuild swapped in
        self._background: set[asyncio.Task[bool]] = set()

    async def get(self, soul_id: str) -> KeyIndex:
        """The soul's index, loaded by the first caller; the others wait for that load (a
        caller that leaves does not cancel it)."""
        if soul_id not in self._loading:
            self._loading[soul_id] = asyncio.create_task(self._load(soul_id))
        task = self._loading[soul_id]
        try:
            return await asyncio.shield(task)
        except Exception:
            if self._loading.get(soul_id) is task:
                del self._loading[soul_id]  # the next caller tries again
            raise

    async def added(self, index: KeyIndex) -> None:
        """After keys were added: past the switch point, become approximate; then snapshot."""
        await self._compress_if_large(index)
        if not index.exact and index.added_since_snapshot >= self.config.snapshot_every:
            self._snapshot_soon(index)
        _report(index)

    async def catch_up(self, index: KeyIndex) -> int:
        """Learn the keys other replicas created: the soul's key log past what this replica
        has read (a primary-key range), reread ``LOG_SLACK_MS`` back at most once a
        ``LOG_REREAD_MS``, since an entry can commit after one whose ULID was taken later.
        Returns how many keys it learned."""
        before, after = len(index), index.log_seen
        if (stale_since := self._stale_since.get(index.soul_id, "")) > index.built_from:
            self.rebuild_soon(index.soul_id, stale_since)  # an earlier try may have failed
        if now_ms() - index.reread_at_ms >= LOG_REREAD_MS:
            index.reread_at_ms = now_ms()
            after = first_ulid_of(ulid_ms(index.log_seen) - LOG_SLACK_MS)
        while entries := await self.store.prompt_key_log_after(index.soul_id, after, PAGE):
            for marker in (e["seq"] for e in entries if e["pk_id"] == REBUILT):
                if marker > index.built_from:
                    self.rebuild_soon(index.soul_id, marker)
            keyed = [e["pk_id"] for e in entries if e["pk_id"] != REBUILT]
            unknown = [pk for pk in keyed if not index.knows(pk)]
            keys = [key for pk in unknown if (key := await self.store.get_prompt_key(pk))]
            index.add([(key.pk_id, key.key_embed or b"") for key in keys])
            after = entries[-1]["seq"]
            index.log_seen = max(index.log_seen, after)
            await self.added(index)
            if len(entries) < PAGE:
                break  # a short page is the end: no read to find the next one empty
        return len(index) - before

    def rebuild_soon(self, soul_id: str, since: str) -> asyncio.Task[KeyIndex]:
        """Build the soul's index anew from its keys as they stand after the log entry
        ``since`` (a rebuild marker), in the background: the current index serves until the
        new one is swapped in. A marker seen during a build makes it build again after."""
        task = self._rebuilding.get(soul_id)
        if task is not None and task.done() and self._swapped_from.get(soul_id, "") >= since:
            return task  # the index swapped in already follows that marker
        self._stale_since[soul_id] = max(self._stale_since.get(soul_id, ""), since)
        if task is None or task.done():
            task = self._rebuilding[soul_id] = asyncio.create_task(self._rebuild(soul_id))
            task.add_done_callback(_log_failure)
        return task

    async def _rebuild(self, soul_id: str) -> KeyIndex:
        while True:
            since = self._stale_since[soul_id]
            index = await self._build(soul_id, since)
            await self.catch_up(index)
            if self._stale_since[soul_id] <= since:
                break
        swapped: asyncio.Future[KeyIndex] = asyncio.get_running_loop().create_future()
        swapped.set_result(index)
        self._loading[soul_id] = swapped
        self._swapped_from[soul_id] = index.built_from
        _report(index)
        log.info("key index of %s rebuilt from %d keys and swapped in", soul_id, len(index))
        return index

    async def flush(self) -> None:
        """Wait for the rebuilds and snapshot writes in flight."""
        await asyncio.gather(*self._rebuilding.values(), return_exceptions=True)
        await asyncio.gather(*self._background, return_exceptions=True)

    async def close(self) -> None:
        """Stop snapshot writes, loads and rebuilds in flight (before their store closes)."""
        running: list[asyncio.Future[Any]] = [
            *self._background,
            *self._loading.values(),
            *self._rebuilding.values(),
        ]
        tasks = [t for t in running if not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _load(self, soul_id: str) -> KeyIndex:
        index = await self._read_snapshot(soul_id) or await self._build(soul_id)
        await self.catch_up(index)
        _report(index)
        return index

    async def _build(self, soul_id: str, since: str = "") -> KeyIndex:
        """From the soul's keys (a primary-key range, page by page); its log is read from where
        the scan began, so keys written during the scan are learned too. ``since``: the
        rebuild marker this build follows (the scan begins after it)."""
        begun = max(first_ulid_of(now_ms()), since)
        index = KeyIndex(soul_id, faiss.IndexFlatIP(self.dim), begun, built_from=begun)
        after = ""
        while keys := await self.store.key_vectors_page(soul_id, after, PAGE):
            index.add(keys)
            after = keys[-1][0]
            await self._compress_if_large(index)  # no snapshot of a part: it would lack the rest
        if not index.exact:
            self._snapshot_soon(index)
        return index

    async def _compress_if_large(self, index: KeyIndex) -> None:
        """Past the switch point, train the approximate index in a thread on a copy of the
        exact one; keys added meanwhile go to the exact one and are carried over at the swap."""
        if not index.exact or len(index) < self.config.approximate_from or index.compressing:
            return
        index.compressing = True
        try:
            trained = len(index)
            approximate = await asyncio.to_thread(
                build_approximate, index.vectors(0, trained), self.config
            )
            if len(index) > trained:
                approximate.add(index.vectors(trained, len(index)))
            index.index = approximate
            log.info("key index of %s is approximate from %d keys", index.soul_id, trained)
        finally:
            index.compressing = False

    def _snapshot_key(self, soul_id: str) -> str:
        return f"keyindex/{soul_id}/snapshot.npz"

    async def _read_snapshot(self, soul_id: str) -> KeyIndex | None:
        if self.objects is None:
            return None
        objects, key = self.objects, self._snapshot_key(soul_id)
        try:
            if not await asyncio.to_thread(objects.exists, key):
                return None
            data = await asyncio.to_thread(objects.get, key)
            return await asyncio.to_thread(decode_snapshot, data, self.config, soul_id, self.dim)
        except Exception:  # damaged or outdated: a build from the keys replaces it
            log.warning("ignoring the key index snapshot of %s", soul_id, exc_info=True)
            return None

    async def write_snapshot(self, index: KeyIndex) -> bool:
        """Under the soul's snapshot lock, so replicas take turns; whether it was written (a
        failure only means the next fresh replica replays a longer tail)."""
        if self.objects is None:
            return False
        objects, key = self.objects, self._snapshot_key(index.soul_id)
        lock, owner = f"keyindex:{index.soul_id}", new_ulid()
        if not await self.store.try_lock(lock, owner, now_ms(), 600_000):
            return False
        try:
            if self._stale_since.get(index.soul_id, "") > index.built_from:
                return False  # its replacement is being built, and will be snapshotted
            copy = index.snapshot(self.config.embedding_id)
            data = await asyncio.to_thread(encode_snapshot, *copy)
            await asyncio.to_thread(objects.put, key, data)
            log.info("wrote the key index snapshot of %s (%d keys)", index.soul_id, len(index))
            return True
        except Exception:
            log.warning("writing the key index snapshot of %s failed", index.soul_id, exc_info=True)
            return False
        finally:
            await self.store.unlock(lock, owner)

    def _snapshot_soon(self, index: KeyIndex) -> None:
        index.added_since_snapshot = 0
        task = asyncio.create_task(self.write_snapshot(index))
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _log_failure(task: asyncio.Task[KeyIndex]) -> None:
    """A rebuild that failed (the store was down): the next catch-up starts another."""
    if not task.cancelled() and task.exception() is not None:
        log.warning("rebuilding a key index failed", exc_info=task.exception())


def _report(index: KeyIndex) -> None:
    for kind, exact in (("exact", True), ("approximate", False)):
        size = len(index) if index.exact is exact else 0
        gauge("soul_key_index_keys", size, soul_id=index.soul_id, index=kind)
