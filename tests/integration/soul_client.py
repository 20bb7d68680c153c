"""HTTP client of a running graph, plus direct looks at its catalog and objects."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
from prometheus_client.parser import text_string_to_metric_families
from psycopg.rows import dict_row

from serve_app.api.deps import key_scope
from serve_app.delivery import tenant_user
from serve_app.metrics import METRICS

API_KEY = "integration-test-key"


def tenant(user_id: str, key: str = API_KEY) -> str:
    """A user as the catalog stores them: scoped by the API client that names them."""
    return tenant_user(key_scope(key), user_id)


# Small and fast on 2 cores; the same code paths as the defaults.
TEST_ARGS: dict[str, Any] = {
    "renderer": {"steps": 4, "width": 64, "height": 64},
    "animator": {"frames": 6, "steps": 4, "strength": 0.5},
    "transcoder": {"fps": 12, "width": 128, "formats": ["gif", "webp"]},
}


class Graph:
    def __init__(
        self, base_url: str, data_dir: Path, database_url: str = "", metrics_url: str = ""
    ) -> None:
        self.base_url = base_url
        self.data_dir = data_dir
        self.database_url = database_url  # empty: the embedded SQLite catalog in data_dir
        self.metrics_url = metrics_url  # the node's Prometheus endpoint, when exported
        self.client = httpx.Client(
            base_url=base_url, timeout=300, headers={"Authorization": f"Bearer {API_KEY}"}
        )

    def image(self, soul_id: str, cue: str, user_id: str) -> httpx.Response:
        return self.client.get(
            "/image", params={"soul_id": soul_id, "cue": cue, "user_id": user_id}
        )

    def rows(self, sql: str, *params: Any) -> list[Any]:
        """Rows of the graph's catalog, by column name; ``?`` placeholders on either backend."""
        if self.database_url:
            with psycopg.connect(self.database_url, row_factory=dict_row) as conn:
                return conn.execute(sql.replace("?", "%s"), params).fetchall()
        db = sqlite3.connect(self.data_dir / "catalog.db")
        db.row_factory = sqlite3.Row
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def objects(self, prefix: str = "") -> list[str]:
        root = self.data_dir / "objects"
        return sorted(
            str(p.relative_to(root))
            for p in root.rglob("*")
            if p.is_file() and str(p.relative_to(root)).startswith(prefix)
        )

    def sidecar(self, storage_key: str) -> dict[str, Any]:
        path = self.data_dir / "objects" / str(Path(storage_key).with_suffix(".json"))
        return json.loads(path.read_text())


def burst(
    graph: Graph, requests: list[dict[str, str]], concurrency: int = 16
) -> list[httpx.Response]:
    """GET /image for every params dict, ``concurrency`` at a time; responses in order."""

    async def main() -> list[httpx.Response]:
        gate = asyncio.Semaphore(concurrency)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=graph.base_url, timeout=600, headers=headers) as c:

            async def one(params: dict[str, str]) -> httpx.Response:
                async with gate:
                    return await c.get("/image", params=params)

            return await asyncio.gather(*(one(p) for p in requests))

    return asyncio.run(main())


Sample = tuple[str, dict[str, str], float]
COUNTED_SUFFIXES = ("_total", "_count", "_sum", "_bucket")  # a counter's or a histogram's series


def scrape(metrics_url: str, prefix: str = "ray_soul_") -> list[Sample]:
    """The node's Prometheus samples whose name starts with ``prefix``: (name, labels, value)."""
    text = httpx.get(metrics_url, timeout=10).text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix)
    ]


def scrape_until(
    metrics_url: str,
    done: Callable[[list[Sample]], bool],
    counts: tuple[str, ...] = (),
    timeout_s: float = 60,
) -> list[Sample]:
    """Scrape until ``done`` holds on two scrapes in a row that agree on the counters and
    histograms of the metrics named in ``counts``: each replica exports on its own one-second
    clock, so only then has every replica reported its latest counts. Only those: a gauge's
    series come and go between scrapes (Ray keeps an export for two seconds), and on a running
    graph other counters (the leasers' catalog calls, the reserve's planner) always move."""
    deadline = time.monotonic() + timeout_s
    counted = {f"ray_{name}{suffix}" for name in counts for suffix in COUNTED_SUFFIXES}
    previous: set[tuple[str, tuple[tuple[str, str], ...], float]] | None = None
    while True:
        samples = scrape(metrics_url)
        now = {
            (name, tuple(sorted(labels.items())), value)
            for name, labels, value in samples
            if name in counted
        }
        if (done(samples) and now == previous) or time.monotonic() > deadline:
            return samples
        previous = now if done(samples) else None
        time.sleep(1.5)


def since(before: list[Sample], now: list[Sample]) -> list[Sample]:
    """``now`` less ``before``: what counters and histograms counted in between (the session's
    graph has served other modules before); gauges as they are now."""
    earlier = {(name, tuple(sorted(labels.items()))): value for name, labels, value in before}
    return [
        (
            name,
            labels,
            value - earlier.get((name, tuple(sorted(labels.items()))), 0.0)
            if name.endswith(COUNTED_SUFFIXES)
            else value,
        )
        for name, labels, value in now
    ]


def total(samples: list[Sample], name: str, **tags: str) -> float:
    """Our metric ``name`` (a counter's total, a histogram's count) summed over the series
    (replicas) that carry ``tags``."""
    kind = METRICS[name].kind
    exported = f"ray_{name}_total" if kind == "counter" else f"ray_{name}_count"
    return sum(
        value
        for sample_name, labels, value in samples
        if sample_name == exported and tags.items() <= labels.items()
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
