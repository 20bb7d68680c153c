"""`soul bench projects`: what an asset costs to generate and to find.

generate   ms per image of an asset version on the tiny model (the renderer settings of
           every bench, `BENCH_ARGS`): the job item's work in-process: the render, the PNG,
           the object write and the catalog's record of the image (SQLite), per asset type
search     ms per `assets:search` of a project holding `--keys` assets (10⁴ by default),
           on SQLite and PostgreSQL: by text (the query's embedding against every latest
           version's), by type and tag only, and the MiniLM embedding of the query text
           (the Ingress's share of a text search) apart
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.bench.common import BENCH_ARGS, write_report

IMAGES = 6
QUERIES = 20
OWNER = "bench"


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 2),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))] * 1000, 2),
        "n": len(ordered),
    }


async def _generate(count: int, folder: Path) -> dict[str, Any]:
    from deployments.catalog import CatalogEngine
    from deployments.renderer import RendererConfig, RendererEngine
    from serve_app.diffusion.sources import ModelManager
    from serve_app.diffusion.tiny import build_tiny_models
    from serve_app.jobs.kinds.asset_generate import asset_key, asset_render, default_roles
    from serve_app.jobs.kinds.character_sheet import png_of
    from serve_app.projects.models import AssetSpec, ProjectDraft
    from serve_app.settings import Settings
    from serve_app.storage import open_object_store
    from serve_app.storage.sqlite import SQLiteStore

    settings = Settings(data_dir=folder)
    models_dir = Settings().resolved_models_dir  # the tiny models every bench shares
    build_tiny_models(models_dir)
    renderer = RendererEngine(ModelManager(models_dir), RendererConfig(**BENCH_ARGS["renderer"]))
    objects = open_object_store(settings)
    catalog = CatalogEngine(SQLiteStore(folder / "catalog.db"))
    await catalog.start([])
    project = await catalog.create_project(OWNER, ProjectDraft(name="bench"))
    rows: dict[str, Any] = {}
    for asset_type in ("character", "environment", "prop"):
        spec = AssetSpec(asset_type=asset_type, name="a", canonical_prompt="a brass lamp")
        roles = default_roles(asset_type)
        _, version = await catalog.create_asset(OWNER, project.project_id, spec, roles, None)
        renderer.render(asset_render(project, version, asset_type, roles[0]))  # warm
        samples, renders = [], []
        for i in range(count):
            role = version.roles[i % len(version.roles)]
            start = time.perf_counter()
            frames = renderer.render(asset_render(project, version, asset_type, role))
            rendered = time.perf_counter()
            key = asset_key(project.project_id, version.asset_id, 1, role)
            objects.put(key, png_of(frames))
            await catalog.add_asset_image(
                OWNER, project.project_id, version.asset_id, 1, role, key, {"role": role}
            )
            samples.append(time.perf_counter() - start)
            renders.append(rendered - start)
        rows[asset_type] = {"item": _ms(samples), "render_alone": _ms(renders)}
    await catalog.close()
    return {"renderer": BENCH_ARGS["renderer"], "per_image": rows}


async def _fill(catalog: Any, project_id: str, count: int) -> None:
    """``count`` assets of one version each, with unit embeddings, written in bulk."""
    import json

    from serve_app.ids import new_ulid

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(count, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    body = json.dumps({"canonical_prompt": "p", "seed_bank": [1], "roles": ["front"]})
    types = ("character", "environment", "nature", "prop")
    assets: list[tuple[Any, ...]] = []
    versions: list[tuple[Any, ...]] = []
    for i in range(count):
        aid = f"ast_{new_ulid().lower()}"
        tags = json.dumps([f"t{i % 10}"])
        assets.append((project_id, aid, types[i % 4], f"a{i}", tags, 1))
        versions.append((project_id, aid, 1, False, body, "{}", vectors[i].tobytes(), 1, 1))
    statements: list[tuple[str, list[tuple[Any, ...]]]] = [
        ("INSERT INTO asset VALUES (?, ?, ?, ?, ?, ?)", assets),
        ("INSERT INTO asset_version VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", versions),
    ]
    store = catalog.store
    if hasattr(store, "db"):  # SQLite: one transaction
        store.db.execute("BEGIN")
        for sql, rows in statements:
            store.db.executemany(sql, rows)
        store.db.execute("COMMIT")
        store.db.execute("ANALYZE")
        return
    import psycopg

    with psycopg.connect(store.dsn) as conn:
        for sql, rows in statements:
            conn.cursor().executemany(sql.replace("?", "%s"), rows)
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")


async def _search(dsn: str, count: int, query: list[float]) -> dict[str, Any]:
    from deployments.catalog import CatalogEngine
    from serve_app.projects.models import ProjectDraft
    from serve_app.storage import open_store

    catalog = CatalogEngine(open_store(dsn))
    await catalog.start([])
    project = await catalog.create_project(OWNER, ProjectDraft(name="bench"))
    await _fill(catalog, project.project_id, count)
    sides: dict[str, Any] = {}
    for name, args in (
        ("text", (query, None, [], 0, 20)),
        ("type+tag", (None, "prop", ["t4"], 0, 20)),
    ):
        await catalog.search_assets(OWNER, project.project_id, *args)  # warm
        samples = []
        for _ in range(QUERIES):
            start = time.perf_counter()
            await catalog.search_assets(OWNER, project.project_id, *args)
            samples.append(time.perf_counter() - start)
        sides[name] = _ms(samples)
    await catalog.close()
    return sides


def projects_main(ns: argparse.Namespace) -> int:
    from deployments.embedder import EmbedderEngine
    from serve_app.storage.postgres import scratch_database

    count = (ns.keys or [10_000])[0]
    report: dict[str, Any] = {"assets": count}
    with tempfile.TemporaryDirectory() as folder:
        report["generate"] = asyncio.run(_generate(ns.requests or IMAGES, Path(folder)))
        embedder = EmbedderEngine()
        embedder.embed(["warm"])
        samples = []
        for i in range(QUERIES):
            start = time.perf_counter()
            query = embedder.embed([f"an old lighthouse by the sea {i}"])[0]
            samples.append(time.perf_counter() - start)
        report["embed_query"] = _ms(samples)
        search = {"sqlite": asyncio.run(_search(f"sqlite:///{folder}/search.db", count, query))}
        with scratch_database(ns.postgres, "soul_bench") as url:
            search["postgres"] = asyncio.run(_search(url, count, query))
        report["search"] = search
    print(f"\nasset generation, ms per image ({BENCH_ARGS['renderer']})")
    for kind, sides in report["generate"]["per_image"].items():
        for side, row in sides.items():
            print(f"  {kind:<13}{side:<14}p50 {row['p50_ms']:>9.1f}  p95 {row['p95_ms']:>9.1f}")
    print(f"\nsearch in a project of {count} assets, ms")
    for backend, sides in search.items():
        for side, row in sides.items():
            print(f"  {backend:<10}{side:<10}p50 {row['p50_ms']:>8.1f}  p95 {row['p95_ms']:>8.1f}")
    print(f"  query embedding (MiniLM) p50 {report['embed_query']['p50_ms']:.1f}")
    write_report(ns, report)
    return 0
