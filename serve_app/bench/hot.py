"""`soul bench hot`: cache hits over HTTP next to the same catalog logic in-process."""

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
    summarize,
    timed_concurrently,
)


async def inprocess_hot(data_dir: Path, n: int) -> dict[str, Any]:
    """The floor: the same catalog logic and URL signing, called directly on the same store."""
    from deployments.catalog import CatalogEngine
    from serve_app.settings import Settings
    from serve_app.storage.objects import open_object_store
    from serve_app.storage.store import store_for

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


def hot_main(ns: argparse.Namespace, n: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The HTTP side and its floor, on one scratch data directory: (http, floor) rows."""
    from serve_app.local import local_graph

    with tempfile.TemporaryDirectory(prefix="soul-bench-") as tmp:
        data_dir = Path(tmp)
        with local_graph(data_dir, port=free_port(), args=BENCH_ARGS, quiet=True) as base:
            http = asyncio.run(http_hot(base, n, ns.concurrency))
        # the floor reads the catalog the HTTP side filled
        floor = asyncio.run(inprocess_hot(data_dir, n))
    return http, floor
