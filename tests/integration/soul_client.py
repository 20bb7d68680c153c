"""HTTP client of a running graph, plus direct looks at its catalog and objects."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

API_KEY = "integration-test-key"
# Small and fast on 2 cores; the same code paths as the defaults.
TEST_ARGS: dict[str, Any] = {
    "renderer": {"steps": 4, "width": 64, "height": 64},
    "animator": {"frames": 6, "steps": 4, "strength": 0.5},
    "transcoder": {"fps": 12, "width": 128, "formats": ["gif", "webp"]},
}


class Graph:
    def __init__(self, base_url: str, data_dir: Path, database_url: str = "") -> None:
        self.base_url = base_url
        self.data_dir = data_dir
        self.database_url = database_url  # empty: the embedded SQLite catalog in data_dir
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
