"""The sweeper: deletes what only waits to expire (work locks, idempotency records, orphan
objects), and the facet that runs it every ``sweep_every_s`` on each Catalog replica."""

from __future__ import annotations

import asyncio
import json
import logging
import re

from ulid import ULID

from serve_app.catalog.facet import Facet
from serve_app.ids import now_ms
from serve_app.metrics import count
from serve_app.storage.objects import ObjectStore
from serve_app.storage.tables import CatalogStore

log = logging.getLogger("ray.serve")

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
        store: CatalogStore,
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


class Sweeping(Facet):
    async def _sweep_forever(self) -> None:
        """Sweep every ``sweep_every_s`` (read each round: a reconfigure applies at once)."""
        while True:
            await asyncio.sleep(self.config.sweep_every_s)
            sweeper = Sweeper(self.store, self.objects, self.config.orphan_grace_s)
            try:
                await sweeper.sweep()
            except Exception:  # the store is away: the next round sweeps what is left
                log.warning("sweeping expired rows failed", exc_info=True)
