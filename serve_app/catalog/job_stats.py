"""The job book's stats: the queue at a glance (for clients, the dashboard and autoscaling) and
estimates of how long a job would take, from the run times of recently finished jobs."""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from serve_app.catalog.estimates import STAGE_KINDS
from serve_app.catalog.facet import Facet
from serve_app.catalog.locks import WORKER_LOCK
from serve_app.ids import now_ms
from serve_app.jobs.book import CONCLUDING
from serve_app.jobs.spec import LANES

RECENT_RUNS = 500


@dataclass(frozen=True)
class Run:
    """A finished job, as estimates measure it."""

    finished_ts: int
    kind: str
    soul_id: str
    wait_ms: int
    run_ms: int
    items: int


class JobStats(Facet):
    def __init__(self) -> None:
        super().__init__()
        self._recent: deque[Run] = deque(maxlen=RECENT_RUNS)

    def _ran(self, run: Run) -> None:
        self._recent.append(run)

    async def _unfinished(self, lane: int, client_id: str | None = None) -> list[Mapping[str, Any]]:
        """The lane's rows (or one client's) but those of jobs that ended and wait to be
        concluded by a worker."""
        rows = await (
            self.store.queue_lane(lane)
            if client_id is None
            else self.store.client_queue(lane, client_id)
        )
        return [r for r in rows if r["lease_owner"] != CONCLUDING]

    async def _position(self, lane: int, job_id: str) -> int:
        """Jobs ahead of this one: unfinished jobs of higher lanes, and older ones of its own."""
        ahead = 0
        for other in sorted(LANES.values()):
            entries = await self._unfinished(other)
            if other < lane:
                ahead += len(entries)
            elif other == lane:
                ahead += sum(1 for e in entries if e["job_id"] < job_id)
        return ahead

    async def job_backlog(self) -> dict[str, float]:
        """Jobs waiting (to be leased, or out their backoff) and jobs leased, for autoscaling."""
        ts = now_ms()
        entries = [e for lane in LANES.values() for e in await self._unfinished(lane)]
        running = sum(1 for e in entries if e["lease_expires_ts"] > ts)
        return {"queued_jobs": float(len(entries) - running), "running_jobs": float(running)}

    async def job_stats(self, window_s: float = 900) -> dict[str, Any]:
        ts = now_ms()
        lanes = {lane: await self._unfinished(lane) for lane in LANES.values()}
        names = {lane: name for name, lane in LANES.items()}
        queued: dict[str, dict[str, int]] = {}
        running: dict[str, dict[str, int]] = {}
        oldest_ms = 0
        for lane, entries in lanes.items():
            for e in entries:
                leased = e["lease_expires_ts"] > ts
                bucket = running if leased else queued
                by_priority = bucket.setdefault(e["kind"], {})
                by_priority[names[lane]] = by_priority.get(names[lane], 0) + 1
                if not leased:
                    oldest_ms = max(oldest_ms, ts - e["created_at_ts"])
        recent = [r for r in self._recent if r.finished_ts >= ts - window_s * 1000]
        return {
            "queued": queued,
            "running": running,
            "oldest_queued_s": oldest_ms / 1000,
            "window_s": window_s,
            "finished_in_window": len(recent),
            "wait_s": _percentiles([r.wait_ms for r in recent]),
            "run_s": _percentiles([r.run_ms for r in recent]),
            "workers_alive": len(await self.store.live_locks(WORKER_LOCK, ts)),
        }

    async def estimate_job(self, kind: str, soul_id: str | None, count: int) -> dict[str, Any]:
        """Seconds a job submitted now would take: the queue ahead shared by the live workers,
        then its own run, both from measured recent run times (per item, by kind and soul)."""
        per_item = self._per_item_s(kind, soul_id)
        if per_item is None:
            return {"estimated_s": None, "basis": f"no {kind} job finished recently to measure"}
        queue = await self._queue_ahead(per_item)
        return {
            "estimated_s": round(queue.pop("queue_s") + per_item * count, 3),
            **queue,
            "per_item_s": round(per_item, 3),
        }

    async def estimate_stages(self, stages: dict[str, int], soul_id: str | None) -> dict[str, Any]:
        """Seconds a job of stages (``catalog/estimates.py``) submitted now would take: the queue
        ahead, then each stage's count times its measured time per item (that of recent jobs
        of the stage's kind, the soul's first), or its configured default (``basis``)."""
        parts: dict[str, dict[str, Any]] = {}
        for stage, count in stages.items():
            measured = self._per_item_s(STAGE_KINDS[stage], soul_id)
            per_item = self.config.estimates.of(stage) if measured is None else measured
            basis = "configured" if measured is None else "measured"
            parts[stage] = {"count": count, "per_item_s": round(per_item, 3), "basis": basis}
        own_s = sum(p["count"] * p["per_item_s"] for p in parts.values())
        queue = await self._queue_ahead(own_s / max(1, sum(stages.values())))
        return {"estimated_s": round(queue.pop("queue_s") + own_s, 3), **queue, "stages": parts}

    async def _queue_ahead(self, per_item: float) -> dict[str, Any]:
        """Every unfinished job ahead, as an item each (a floor), shared by the live workers."""
        ahead = sum([len(await self._unfinished(lane)) for lane in LANES.values()])
        workers = max(1, len(await self.store.live_locks(WORKER_LOCK, now_ms())))
        queue_s = ahead * (self._per_item_s(None, None) or per_item) / workers
        return {"queue_s": queue_s, "queue_ahead": ahead, "workers_alive": workers}

    def _per_item_s(self, kind: str | None, soul_id: str | None) -> float | None:
        runs = [
            r.run_ms / max(1, r.items)
            for r in self._recent
            if (kind is None or r.kind == kind) and (soul_id is None or r.soul_id == soul_id)
        ]
        if not runs and soul_id is not None:
            return self._per_item_s(kind, None)
        return statistics.median(runs) / 1000 if runs else None


def _percentiles(values_ms: list[int]) -> dict[str, float | None]:
    if not values_ms:
        return {"p50": None, "p95": None}
    ordered = sorted(values_ms)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000  # noqa: E731
    return {"p50": pick(0.5), "p95": pick(0.95)}
