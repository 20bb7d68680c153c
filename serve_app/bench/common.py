"""`soul bench hot|miss|catalog|render|jobs|faults`: side-by-side measurements in one invocation.

hot and miss: the service over HTTP next to its in-process floor. catalog: the catalog on
PostgreSQL next to SQLite (in-process operations, then the whole graph over HTTP with 2 ingress
and 2 catalog replicas: hot-path requests/s and the renders that miss coalescing saves).
faults: what killed replicas, a dropped database and a header flood cost under load.
Both sides run on the same machine in the same run, so ratios are what to read; absolute times
on a shared 2-core box are noisy. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from serve_app.local import SPEED_MODES

CUE = "penguin on a skateboard"
SOUL = "nova"
BENCH_ARGS: dict[str, Any] = {
    "renderer": {"steps": 8, "width": 128, "height": 128},
    "animator": {"frames": 8, "steps": 10, "strength": 0.3},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "scenario",
        choices=[
            "hot",
            "miss",
            "catalog",
            "render",
            "jobs",
            "faults",
            "matching",
            "keys",
            "probes",
            "rebuild",
            "batch",
            "dedupe",
        ],
        help="hot: cache hits; miss: new renders; catalog: PostgreSQL vs SQLite; "
        "render: LoRA hot-swap vs reload, style switches, encode formats; "
        "jobs: queue overhead, queue jobs/s, high vs normal wait under a flood; "
        "faults: replicas killed and the database dropped under load, a header flood; "
        "matching: embedded text and threshold on labelled cue pairs; "
        "keys: a soul's key index at --keys keys, exact vs approximate, SQLite and PostgreSQL; "
        "probes: the approximate index at --keys keys, recall and query time by lists probed; "
        "rebuild: the key rebuild job over --keys keys while new cues are served; "
        "batch: renders/s of one Renderer by concurrency, batched vs unbatched; "
        "dedupe: how often pHash and CLIP fire on distinct renders and on copies, ms per check",
    )
    p.add_argument("--requests", type=int, default=None, help="measured requests per side")
    p.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients (hot)")
    p.add_argument(
        "--modes",
        nargs="+",
        choices=list(SPEED_MODES),
        default=["ray-defaults", "soul", "throughput-optimized"],
        help="hot: Serve speed modes, each on a local Ray of its own (serve_app/local.py: "
        "soul is the default; every part of throughput-optimized can run alone)",
    )
    p.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="catalog, faults: PostgreSQL server to use (a scratch database is created and "
        "dropped)",
    )
    p.add_argument(
        "--fault-after",
        type=float,
        default=3.0,
        help="faults: seconds into each phase's load at which the fault is injected",
    )
    p.add_argument(
        "--keys",
        type=int,
        nargs="+",
        default=[10_000, 100_000],
        help="keys, probes, rebuild: keys in the soul (a row per count, and per index and "
        "backend, or per probe)",
    )
    p.add_argument("--out", default=None, help="JSON file (default: bench-<scenario>.json)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summarize(name: str, latencies_s: list[float], wall_s: float) -> dict[str, Any]:
    ms = sorted(x * 1000 for x in latencies_s)
    return {
        "side": name,
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 3),
        "rps": round(len(ms) / wall_s, 1),
    }


async def timed_concurrently(
    calls: Sequence[Callable[[], Awaitable[None]]], concurrency: int
) -> tuple[list[float], float]:
    """Run ``calls`` with at most ``concurrency`` in flight; per-call latencies and wall time."""
    latencies: list[float] = []
    queue = list(reversed(calls))

    async def worker() -> None:
        while queue:
            call = queue.pop()
            t0 = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - t0


async def http_hot(
    base: str, n: int, concurrency: int, side: str = "http (ingress -> catalog)"
) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:

        async def get(user: str, expect: str | None = "hit") -> None:
            r = await client.get("/image", params={"soul_id": SOUL, "cue": CUE, "user_id": user})
            r.raise_for_status()
            assert expect is None or r.json()["cache"] == expect, r.text

        run = time.time_ns()
        await get(f"warm-{run}-0", expect=None)  # the first run renders what later users receive
        for i in range(1, 20):
            await get(f"warm-{run}-{i}")
        calls = [partial(get, f"http-{run}-{i}") for i in range(n)]
        return summarize(side, *await timed_concurrently(calls, concurrency))


def write_report(ns: argparse.Namespace, report: dict[str, Any]) -> None:
    """The run's JSON, at ``--out`` or ``bench-<scenario>.json``."""
    out = Path(ns.out or f"bench-{ns.scenario}.json")
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


def print_table(title: str, rows: list[dict[str, Any]], ratio: dict[str, float]) -> None:
    print(f"\n{title}")
    print(f"{'side':<46}{'n':>6}{'p50 ms':>11}{'p95 ms':>11}{'req/s':>9}")
    for r in rows:
        print(f"{r['side']:<46}{r['n']:>6}{r['p50_ms']:>11.2f}{r['p95_ms']:>11.2f}{r['rps']:>9.1f}")
    for name, value in ratio.items():
        print(f"{name}: {value:.2f}")


def print_stages(http: dict[str, Any], floor: dict[str, Any]) -> None:
    """The rows' ``stages_ms`` side by side, with what the HTTP side adds to each."""
    print(f"\n{'ms per request (mean)':<46}{'http':>11}{'in-process':>11}{'added':>11}")
    for stage, ms in http["stages_ms"].items():
        base = floor["stages_ms"][stage]
        print(f"{stage:<46}{ms:>11.1f}{base:>11.1f}{ms - base:>+11.1f}")


def report_pair(ns: argparse.Namespace, http: dict[str, Any], floor: dict[str, Any]) -> int:
    """hot and miss: print the HTTP side next to its in-process floor (stage by stage where the
    rows have ``stages_ms``) and write the JSON."""
    ratio = {"p50 ratio http/in-process": http["p50_ms"] / floor["p50_ms"]}
    report = {
        "scenario": ns.scenario,
        "rows": [http, floor],
        **ratio,
        "concurrency": ns.concurrency if ns.scenario == "hot" else 1,
    }
    print_table(f"soul bench {ns.scenario}", [http, floor], ratio)
    if "stages_ms" in http:
        print_stages(http, floor)
    write_report(ns, report)
    return 0


def main(ns: argparse.Namespace) -> int:
    from serve_app.bench import (
        batch,
        catalog,
        dedupe,
        faults,
        hot,
        jobs,
        keys,
        matching,
        miss,
        rebuild,
        render,
    )

    n = ns.requests or (200 if ns.scenario in ("hot", "catalog") else 5)
    if ns.scenario == "catalog":
        return catalog.report_catalog(ns, catalog.catalog_main(ns, n))
    if ns.scenario == "render":
        return render.render_main(ns)
    if ns.scenario == "jobs":
        return jobs.jobs_main(ns)
    if ns.scenario == "matching":
        return matching.matching_main(ns)
    if ns.scenario == "keys":
        return keys.keys_main(ns)
    if ns.scenario == "probes":
        return keys.probes_main(ns)
    if ns.scenario == "rebuild":
        return rebuild.rebuild_main(ns)
    if ns.scenario == "batch":
        return batch.batch_main(ns)
    if ns.scenario == "dedupe":
        return dedupe.dedupe_main(ns)
    if ns.scenario == "faults":
        return faults.report_faults(ns, faults.faults_main(ns))
    if ns.scenario == "hot":
        return hot.report_hot(ns, hot.hot_main(ns, n))
    http, floor = miss.miss_main(n)
    return report_pair(ns, http, floor)
