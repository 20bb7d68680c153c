"""The replays facet: Idempotency-Key records, one row per key, changed only by compare-and-set
(``api/idempotency.py`` runs the protocol over them)."""

from __future__ import annotations

import json

from serve_app.catalog.facet import Facet
from serve_app.ids import now_ms
from serve_app.schemas import IdempotentStart


class ReplayRecords(Facet):
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


def _record(state: str, fingerprint: str, expires_at_ts: int, result: dict | None = None) -> str:
    return json.dumps(
        {
            "state": state,
            "fingerprint": fingerprint,
            "expires_at_ts": expires_at_ts,
            "result": result,
        }
    )
