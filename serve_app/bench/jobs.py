"""`soul bench jobs`: what the job queue costs, side by side in one run.

1. Over HTTP on a local graph: a job for a cache hit, submit to succeeded over two requests
   (the submit, then its event stream; and the submit's own answer; submit to started: the
   queue's own overhead; started to finished: the worker's part), and over one (a submit
   that answers with the job's events, ``Accept: text/event-stream``), next to the same hit
   asked synchronously (GET /image); the three interleaved.
2. The job book in-process, with no-op work: jobs/s it sustains (submit, lease, finish), on
   SQLite and on PostgreSQL.
3. Under a flood of normal jobs, the p95 wait of the high-priority jobs mixed in vs the normal
   ones (in-process, no-op work of a fixed few milliseconds).
4. With ``--idle-s``: a graph of 2 Catalog and 2 JobWorker replicas sits idle that long, and
   the Catalog's calls are counted per minute by method (from Serve's access log of the
   Catalog, on for this graph only); then hit jobs on it, submit to started (a job queued
   through one Catalog replica, its worker's lease waiting on either).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from serve_app.bench.common import (
    BENCH_ARGS,
    CUE,
    SOUL,
    free_port,
    print_table,
    summarize,
    write_report,
)

JOBS_ARGS: dict[str, Any] = {**BENCH_ARGS, "worker": {"slots": 2}}


async def http_side(base: str, n: int) -> list[dict[str, Any]]:
    """``n`` rounds of: the sync hit, the hit as a job followed by a second request (its event
    stream), and as a job whose submit answers with its events (one request); interleaved, so
    the three meet the same load."""
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        warm = await client.get("/image", params={"soul_id": SOUL, "cue": CUE, "user_id": "warm"})
        warm.raise_for_status()  # renders the variant every later user gets as a hit
        run = time.time_ns()
        sides: dict[str, list[float]] = {s: [] for s in ("sync", "done", "posted", "streamed")}
        started: list[float] = []
        ran: list[float] = []
        for i in range(n):
            t0 = time.perf_counter()
            params = {"soul_id": SOUL, "cue": CUE, "user_id": f"sync-{run}-{i}"}
            (await client.get("/image", params=params)).raise_for_status()
            sides["sync"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            body = {"kind": "image", "soul_id": SOUL, "cue": CUE, "user_id": f"job-{run}-{i}"}
            accepted = await client.post("/jobs", json=body)
            accepted.raise_for_status()
            sides["posted"].append(time.perf_counter() - t0)
            doc = await _finished(client, accepted.json()["job_id"])
            sides["done"].append(time.perf_counter() - t0)
            started.append(_seconds_between(doc["created_at"], doc["started_at"]))
            ran.append(_seconds_between(doc["started_at"], doc["finished_at"]))
            t0 = time.perf_counter()
            body["user_id"] = f"streamed-{run}-{i}"
            await _finished(client, "", body)
            sides["streamed"].append(time.perf_counter() - t0)
    wall = sum(sides["sync"]) or 1.0
    jobs_wall = sum(sides["done"]) or 1.0
    return [
        summarize("sync GET /image (hit)", sides["sync"], wall),
        summarize("job submit -> succeeded (hit)", sides["done"], jobs_wall),
        summarize("job POST /jobs answered (202)", sides["posted"], jobs_wall),
        summarize("job submit -> started (queue overhead)", started, jobs_wall),
        summarize("job started -> finished (the worker)", ran, jobs_wall),
        summarize("job POST /jobs as events -> done", sides["streamed"], jobs_wall),
    ]


async def _finished(
    client: httpx.AsyncClient, job_id: str, submit: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Follow the job's events to ``done`` (no polling interval in the measurement): the
    job's stream, or with ``submit`` the answer of that submit asked as events."""
    events = {"Accept": "text/event-stream"}
    if submit is None:
        request = client.stream("GET", f"/jobs/{job_id}/events")
    else:
        request = client.stream("POST", "/jobs", json=submit, headers=events)
    async with request as stream:
        stream.raise_for_status()
        last = ""
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                last = line
    doc: dict[str, Any] = json.loads(last.removeprefix("data: "))
    if doc["status"] != "succeeded":
        raise RuntimeError(f"job {doc['job_id']} ended {doc['status']}: {doc['error']}")
    return doc


def idle_side(data_dir: Path, idle_s: float, n: int) -> dict[str, Any]:
    """The Catalog's calls per idle minute by method, and ``n`` hit jobs' submit -> started."""
    from serve_app.local import local_graph

    logs = data_dir / "idle-logs"
    args = {
        **JOBS_ARGS,
        "replicas": {"Catalog": 2, "JobWorker": 2},
        "logging": {"access_log": ["Ingress", "Catalog"], "logs_dir": str(logs)},
    }
    with local_graph(data_dir / "idle", port=free_port(), args=args, quiet=True) as base:
        time.sleep(10)  # the replicas' first calls (their starts) are not idle ones
        before = _catalog_calls(logs)
        time.sleep(idle_s)
        after = _catalog_calls(logs)
        started = asyncio.run(_started(base, n))
    per_min = {m: round((after[m] - before[m]) * 60 / idle_s, 1) for m in sorted(after)}
    calls = {method: count for method, count in per_min.items() if count}
    return {"catalog_calls_per_idle_min": calls, "started": started}


def _catalog_calls(logs: Path) -> Counter[str]:
    """Calls per method in the Catalog replicas' access log lines (``CALL <method> OK``)."""
    calls: Counter[str] = Counter()
    for path in logs.rglob("*Catalog*"):
        calls.update(re.findall(r"CALL (\w+) OK", path.read_text(errors="replace")))
    return calls


async def _started(base: str, n: int) -> list[float]:
    async with httpx.AsyncClient(base_url=base, timeout=300) as client:
        warm = await client.get("/image", params={"soul_id": SOUL, "cue": CUE, "user_id": "warm"})
        warm.raise_for_status()
        started = []
        for i in range(n):
            body = {"kind": "image", "soul_id": SOUL, "cue": CUE, "user_id": f"idle-{i}"}
            accepted = await client.post("/jobs", json=body)
            accepted.raise_for_status()
            doc = await _finished(client, accepted.json()["job_id"])
            started.append(_seconds_between(doc["created_at"], doc["started_at"]))
    return started


def _seconds_between(first: str, then: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(then) - datetime.fromisoformat(first)).total_seconds()


async def throughput(dsn: str, n: int, workers: int) -> dict[str, Any]:
    """Submit ``n`` jobs, then ``workers`` loops lease and finish them with no work between."""
    from deployments.catalog import CatalogEngine
    from serve_app.jobs.book import Outcome
    from serve_app.storage import open_store

    book = CatalogEngine(open_store(dsn))
    await book.start([])
    spec = {"kind": "image", "soul_id": SOUL, "cue": CUE, "user_id": "u"}
    t0 = time.perf_counter()
    for i in range(n):
        await book.submit_job(f"client-{i % 4}", spec, 1, 3, n, n)
    submitted_s = time.perf_counter() - t0
    latencies: list[float] = []

    async def worker(owner: str) -> None:
        while True:
            t = time.perf_counter()
            leased = await book.lease_job(owner, 60_000)
            if leased is None:
                return
            await book.finish_job(leased.lease, "succeeded", Outcome(items=[{}]), None)
            await book.conclude_job(leased.lease)
            latencies.append(time.perf_counter() - t)

    t1 = time.perf_counter()
    await asyncio.gather(*(worker(f"w{k}") for k in range(workers)))
    row = summarize(f"queue {dsn.split(':')[0]}: lease+finish", latencies, time.perf_counter() - t1)
    row["submit_per_s"] = round(n / submitted_s, 1)
    await book.close()
    return row


async def priority_flood(dsn: str, normal: int, high: int, work_ms: float) -> list[dict[str, Any]]:
    """Normal jobs keep arriving with high ones among them; two workers with fixed work."""
    from deployments.catalog import CatalogEngine
    from serve_app.jobs.book import Outcome
    from serve_app.storage import open_store

    book = CatalogEngine(open_store(dsn))
    await book.start([])
    kinds = ["normal"] * normal + ["high"] * high
    random.Random(7).shuffle(kinds)
    waits: dict[str, list[float]] = {"normal": [], "high": []}
    submitted = asyncio.Event()

    async def flood() -> None:
        for i, priority in enumerate(kinds):
            spec = {"kind": "image", "soul_id": SOUL, "cue": CUE, "user_id": "u",
                    "priority": priority}  # fmt: skip
            await book.submit_job(f"client-{i % 3}", spec, 1, 3, len(kinds), len(kinds))
            await asyncio.sleep(work_ms / 4000)  # arrivals outpace the two workers
        submitted.set()

    async def worker(owner: str) -> None:
        while True:
            leased = await book.lease_job(owner, 60_000)
            if leased is None:
                if submitted.is_set():
                    return
                await asyncio.sleep(0.001)
                continue
            doc = leased.doc
            waits[doc.priority].append((doc.started_at_ts or 0) / 1000 - doc.created_at_ts / 1000)
            await asyncio.sleep(work_ms / 1000)
            await book.finish_job(leased.lease, "succeeded", Outcome(items=[{}]), None)
            await book.conclude_job(leased.lease)

    t0 = time.perf_counter()
    await asyncio.gather(flood(), worker("w1"), worker("w2"))
    wall = time.perf_counter() - t0
    await book.close()
    return [summarize(f"wait of {p} jobs under a normal flood", w, wall) for p, w in waits.items()]


def jobs_main(ns: argparse.Namespace) -> int:
    from serve_app.local import local_graph
    from serve_app.storage.postgres import scratch_database

    n = ns.requests or 20
    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        data_dir = Path(tmp)
        with local_graph(data_dir, port=free_port(), args=JOBS_ARGS, quiet=True) as base:
            http = asyncio.run(http_side(base, n))
        sqlite_dsn = f"sqlite:///{data_dir / 'queue.db'}"
        queue = [asyncio.run(throughput(sqlite_dsn, 500, 2))]
        with scratch_database(ns.postgres, "soul_bench_jobs") as postgres_dsn:
            queue.append(asyncio.run(throughput(postgres_dsn, 500, 2)))
        flood = asyncio.run(priority_flood(f"sqlite:///{data_dir / 'flood.db'}", 300, 30, 8))
        idle = idle_side(data_dir, ns.idle_s, n) if ns.idle_s > 0 else None
    rows = http + queue + flood
    if idle is not None:
        rows.append(summarize("2+2 replicas: submit -> started", idle["started"], 1.0))
    ratio = {
        "p50 job/sync (hit)": http[1]["p50_ms"] / http[0]["p50_ms"],
        "p50 job as events/sync (hit)": http[5]["p50_ms"] / http[0]["p50_ms"],
        "queue jobs/s sqlite/postgres": queue[0]["rps"] / queue[1]["rps"],
        "p95 wait normal/high": flood[0]["p95_ms"] / max(flood[1]["p95_ms"], 1e-3),
    }
    print_table("soul bench jobs", rows, ratio)
    report: dict[str, Any] = {"scenario": "jobs", "rows": rows, **ratio}
    if idle is not None:
        calls = idle["catalog_calls_per_idle_min"]
        print(f"Catalog calls per idle minute (2 Catalog, 2 JobWorker replicas): {calls}")
        report["catalog_calls_per_idle_min"] = calls
    write_report(ns, report)
    return 0
