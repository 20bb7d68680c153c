"""What the `soul bench` scenarios share: the bench's soul, cue and graph arguments, timing
and summaries, the hot-path HTTP client, the table and the JSON report.

Every scenario measures its sides on the same machine in the same run, so ratios are what to
read; absolute times on a shared 2-core box are noisy.
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

CUE = "penguin on a skateboard"
SOUL = "nova"
BENCH_ARGS: dict[str, Any] = {
    "renderer": {"steps": 8, "width": 128, "height": 128},
    "animator": {"frames": 8, "steps": 10, "strength": 0.3},
}


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
