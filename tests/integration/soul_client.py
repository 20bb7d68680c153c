"""HTTP client of a running graph, plus direct looks at its catalog and objects."""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import httpx

API_KEY = "integration-test-key"


class Graph:
    def __init__(self, base_url: str, data_dir: Path) -> None:
        self.base_url = base_url
        self.data_dir = data_dir
        self.client = httpx.Client(
            base_url=base_url, timeout=300, headers={"Authorization": f"Bearer {API_KEY}"}
        )

    def image(self, soul_id: str, cue: str, user_id: str) -> httpx.Response:
        return self.client.get(
            "/image", params={"soul_id": soul_id, "cue": cue, "user_id": user_id}
        )

    def rows(self, sql: str, *params: Any) -> list[sqlite3.Row]:
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
        path = self.data_dir / "objects" / storage_key.replace(".gif", ".json")
        return json.loads(path.read_text())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
