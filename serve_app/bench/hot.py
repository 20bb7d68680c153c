"""`soul bench hot`: cache hits over HTTP next to the floor, per speed mode, and in-process.

Each mode (``--modes``, names in ``serve_app.local.SPEED_MODES``) gets a local Ray of its own,
started with that node environment; in it, the same client measures our hit path and then the
floor, a no-op graph of our shape (``serve_app.bench.floor``): ours/floor is what a hit costs
above Ray's own. Last, the catalog logic called in-process on the same store."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from serve_app.bench.common import (
    BENCH_ARGS,
    CUE,
    SOUL,
    free_port,
    http_hot,
    print_table,
    summarize,
    timed_concurrently,
    write_report,
)


async def inprocess_hot(data_dir: Path, n: int) -> dict[str, Any]:
    """The floor: the same catalog logic and URL signing, called directly on the same store."""
    from deployments.catalog import CatalogEngine
    from serve_app.settings import Settings
    from serve_app.storage import open_object_store, store_for

    settings = Settings(data_dir=data_dir)
    engine = CatalogEngine(store_for(settings))
    await engine.start([])
    objects = open_object_store(settings)

    async def get(user: str) -> None:
        lookup = await engine.lookup(SOUL, CUE, user)
        assert lookup is not None and lookup.claimed is not None
        objects.signed_url(lookup.claimed.storage_key, 60)

    calls = [partial(get, f"local-{i}") for i in range(n)]
    result = summarize("in-process (catalog engine)", *await timed_concurrently(calls, 1))
    await engine.close()
    return result


def mode_hot(
    data_dir: Path, mode: str, n: int, concurrency: int, profile: Path | None = None
) -> list[dict[str, Any]]:
    """Our hit path, then the floor, over HTTP on one local Ray in ``mode``: two rows; with
    ``profile``, our replicas are sampled meanwhile (``serve_app.bench.profile``)."""
    from ray import serve

    from serve_app.bench.floor import build_floor
    from serve_app.bench.profile import profiled
    from serve_app.local import SPEED_MODES, local_graph

    env = SPEED_MODES[mode]
    with local_graph(data_dir, port=free_port(), args=BENCH_ARGS, env=env, quiet=True) as base:
        with profiled(profile, mode):
            ours = asyncio.run(http_hot(base, n, concurrency, f"ours [{mode}]"))
        serve.run(build_floor(), name="floor", route_prefix="/floor")
        floor = asyncio.run(http_hot(f"{base}/floor", n, concurrency, f"floor [{mode}]"))
    return [{**ours, "mode": mode}, {**floor, "mode": mode}]


def hot_main(ns: argparse.Namespace, n: int) -> dict[str, Any]:
    """Every mode's two rows, then the in-process row, on one scratch data directory."""
    rows: list[dict[str, Any]] = []
    ratios: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        data_dir = Path(tmp)
        for mode in ns.modes:
            profile = Path(ns.profile) if ns.profile else None
            ours, floor = mode_hot(data_dir, mode, n, ns.concurrency, profile)
            rows += [ours, floor]
            ratios[f"{mode}: p50 ours/floor"] = ours["p50_ms"] / floor["p50_ms"]
            ratios[f"{mode}: req/s ours/floor"] = ours["rps"] / floor["rps"]
        # the in-process side reads the catalog the HTTP side filled
        inprocess = asyncio.run(inprocess_hot(data_dir, n))
    ratios["p50 ratio http/in-process"] = rows[0]["p50_ms"] / inprocess["p50_ms"]
    return {"rows": [*rows, inprocess], "ratios": ratios}


def report_hot(ns: argparse.Namespace, result: dict[str, Any]) -> int:
    print_table("soul bench hot", result["rows"], result["ratios"])
    report = {"scenario": "hot", **result, "concurrency": ns.concurrency, "modes": ns.modes}
    write_report(ns, report)
    return 0


def run(ns: argparse.Namespace) -> int:
    return report_hot(ns, hot_main(ns, ns.requests or 200))
