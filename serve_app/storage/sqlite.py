"""The embedded default catalog backend: one SQLite file (WAL), statements run inline; job and
queue writes are announced by datagram to the replicas waiting on them (``storage/changes.py``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from serve_app.storage.changes import QUEUE, DatagramNotices, job_ref
from serve_app.storage.store import Row, StoreUnavailable
from serve_app.storage.tables import CatalogStore


class SQLiteStore(CatalogStore):
    """Embedded default. Statements take microseconds, so they run inline on the event loop."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self.notices = DatagramNotices(path)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreUnavailable("SQLite store is not open")
        return self._db

    async def open(self) -> None:
        await self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=10)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for ddl in self.schema():
            db.executescript(ddl.sqlite)
            for table, column, definition in ddl.sqlite_added:  # a catalog of an older version
                columns = {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}
                if column not in columns:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            db.executescript(ddl.sqlite_later)
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self.notices.close()

    def _job_written(self, client_id: str, job_id: str) -> None:
        self.notices.send(job_ref(client_id, job_id))

    def _queue_changed(self) -> None:
        self.notices.send(QUEUE)

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            return self.db.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:  # locked past the timeout, disk gone, ...
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self.db.execute(sql, params).rowcount
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc
