"""`soul bench catalog`: the catalog on PostgreSQL next to SQLite, in-process and over HTTP."""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

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


async def catalog_ops(dsn: str, n: int) -> list[dict[str, Any]]:
    """Key resolution and claims on one backend, called in-process (one at a time)."""
    import numpy as np

    from deployments.catalog import CatalogEngine
    from serve_app.catalog.souls import load_souls
    from serve_app.ids import new_ulid
    from serve_app.schemas import Variant
    from serve_app.storage import open_store

    backend = dsn.split(":")[0]
    engine = CatalogEngine(open_store(dsn))
    await engine.start(load_souls("config/souls.yaml"))
    rng = np.random.default_rng(0)
    hot = await engine.lookup(SOUL, CUE)
    assert hot is not None
    key, _ = await engine.resolve_similar(SOUL, hot.key_norm, rng.standard_normal(384).tolist())
    for _ in range(8):
        vid = new_ulid()
        variant = Variant(
            variant_id=vid, pk_id=key.pk_id, soul_id=SOUL, asset_url="", storage_key=vid
        )
        await engine.put_variant(variant, [])

    async def exact() -> None:
        assert (await engine.lookup(SOUL, CUE)).key is not None  # type: ignore[union-attr]

    counter = iter(range(10**9))

    async def new_key() -> None:
        await engine.resolve_similar(
            SOUL, f"bench key {next(counter)}", rng.standard_normal(384).tolist()
        )

    async def claim() -> None:
        assert await engine.claim_unseen(key.pk_id, f"claimer-{next(counter)}") is not None

    async def hit() -> None:
        found = await engine.lookup(SOUL, CUE, f"hitter-{next(counter)}")
        assert found is not None and found.claimed is not None

    rows = []
    for name, op in [
        ("key resolution: exact", exact),
        ("key resolution: new key (faiss)", new_key),
        ("claim unseen (8 variants)", claim),
        ("hot lookup + claim", hit),
    ]:
        for _ in range(20):  # warm-up: connections, prepared statements
            await op()
        rows.append(summarize(f"{backend}: {name}", *await timed_concurrently([op] * n, 1)))
    await engine.close()
    return rows


async def coalescing(base: str, users: int, cues: int) -> dict[str, Any]:
    """Scenario (b) scaled up: ``users`` users ask each of ``cues`` brand-new cues at once."""
    run = time.time_ns()
    async with httpx.AsyncClient(base_url=base, timeout=600) as client:

        async def get(cue: str, user: str) -> str:
            r = await client.get("/image", params={"soul_id": SOUL, "cue": cue, "user_id": user})
            r.raise_for_status()
            return str(r.json()["variant_id"])

        t0 = time.perf_counter()
        ids = await asyncio.gather(
            *(get(f"novel thing {c} {run}", f"u{u}") for c in range(cues) for u in range(users))
        )
        wall = time.perf_counter() - t0
    renders = len(set(ids))
    return {
        "requests": len(ids),
        "renders": renders,
        "renders_saved": len(ids) - renders,
        "wall_s": round(wall, 2),
    }


def catalog_main(ns: argparse.Namespace, n: int) -> dict[str, Any]:
    from serve_app.local import local_graph
    from serve_app.storage.postgres import scratch_database

    ops: dict[str, list[dict[str, Any]]] = {}
    graphs: dict[str, dict[str, Any]] = {}
    args = {**BENCH_ARGS, "replicas": {"Ingress": 2, "Catalog": 2}}
    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        with scratch_database(ns.postgres, "soul_bench") as pg_url:
            ops["postgresql"] = asyncio.run(catalog_ops(pg_url, n))
        ops["sqlite"] = asyncio.run(catalog_ops(f"sqlite:///{Path(tmp) / 'ops.db'}", n))
        with scratch_database(ns.postgres, "soul_bench") as pg_url:
            for name, env in [("postgresql", {"SOUL_DATABASE_URL": pg_url}), ("sqlite", {})]:
                data_dir = Path(tmp) / name
                with local_graph(
                    data_dir, port=free_port(), args=args, env=env, quiet=True
                ) as base:
                    hot = [
                        asyncio.run(http_hot(base, n, c, f"{name}: http hot, {c} clients"))
                        for c in (1, ns.concurrency, 4 * ns.concurrency)
                    ]
                    coalesced = asyncio.run(coalescing(base, 32, 4))
                    graphs[name] = {"hot": hot, "coalescing": coalesced}
    return {"ops": ops, "graphs": graphs}


def report_catalog(ns: argparse.Namespace, result: dict[str, Any]) -> int:
    ops, graphs = result["ops"], result["graphs"]
    ratio = side_ratios(ops["postgresql"], ops["sqlite"], "p50_ms", "p50 ratio postgresql/sqlite")
    op_rows = ops["postgresql"] + ops["sqlite"]
    print_table("soul bench catalog: in-process catalog operations", op_rows, ratio)
    rps = side_ratios(
        graphs["postgresql"]["hot"], graphs["sqlite"]["hot"], "rps", "req/s ratio postgresql/sqlite"
    )
    hot_rows = graphs["postgresql"]["hot"] + graphs["sqlite"]["hot"]
    print_table("soul bench catalog: hot path over HTTP, 2 ingress + 2 catalog", hot_rows, rps)
    print("\nmiss coalescing: 32 users x 4 brand-new cues at once")
    for name, g in graphs.items():
        c = g["coalescing"]
        print(
            f"{name:<12}{c['requests']:>5} requests {c['renders']:>4} renders "
            f"{c['renders_saved']:>4} saved  {c['wall_s']:>7.2f} s"
        )
    write_report(ns, {"scenario": "catalog", **result, **ratio, **rps})
    return 0


def side_ratios(
    left: list[dict[str, Any]], right: list[dict[str, Any]], field: str, label: str
) -> dict[str, float]:
    """``left[i][field] / right[i][field]``, named after what row i measured."""
    return {
        f"{label}, {a['side'].split(': ', 1)[1]}": a[field] / b[field]
        for a, b in zip(left, right, strict=True)
    }


def run(ns: argparse.Namespace) -> int:
    return report_catalog(ns, catalog_main(ns, ns.requests or 200))
