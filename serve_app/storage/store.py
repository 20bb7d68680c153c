"""The catalog store's primitives: run a statement, fail with ``StoreUnavailable``, apply the
schema. The statements live in ``tables/``, one module per table family; each backend (SQLite,
PostgreSQL) only says how to connect, run a statement and how it fails.

Every hot path is a primary-key read (or a primary-key prefix scan) and every write is a
single-row, idempotent, last-write-wins upsert: no cross-row transactions, no joins.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from serve_app.errors import ServiceError

Row = Mapping[str, Any]


class StoreUnavailable(ServiceError):
    """The catalog database cannot be reached; nothing was changed, the client retries later."""

    status_code = 503
    retry_after_s = 2
    public_detail = "catalog store unavailable; nothing was changed, retry shortly"


@dataclass(frozen=True)
class TableDDL:
    """One table family's schema in both dialects (``CREATE ... IF NOT EXISTS``: idempotent)."""

    sqlite: str
    postgres: str
    # Columns added after a table first shipped, which SQLite cannot add IF NOT EXISTS:
    # (table, column, definition).
    sqlite_added: tuple[tuple[str, str, str], ...] = ()
    sqlite_later: str = ""  # indexes on added columns: made once the columns are there


def lww_upsert_sql(table: str, columns: list[str], keys: list[str], tiebreak: str) -> str:
    """A single-row upsert that only wins when newer; equal timestamps fall to ``tiebreak``."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
        f"WHERE excluded.updated_at_ts > {table}.updated_at_ts OR "
        f"(excluded.updated_at_ts = {table}.updated_at_ts "
        f"AND excluded.{tiebreak} > {table}.{tiebreak})"
    )


def insert_sql(table: str, columns: list[str], suffix: str = "ON CONFLICT DO NOTHING") -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) {suffix}"


class Store(ABC):
    """Statements written once with ``?`` placeholders; a backend runs them.

    Each table family is a subclass that holds its statements and its ``ddl``; the backend
    applies the ``ddl`` of every family the store class mixes in. JSON columns travel as text
    in both backends. Timestamps come from the caller (the catalog stamps every write with one
    clock, ``serve_app.ids.now_ms``).
    """

    ddl: ClassVar[TableDDL | None] = None

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply the schema (idempotent)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a statement that returns rows (SELECT, or a write with RETURNING)."""

    @abstractmethod
    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement that returns no rows; the number of rows it changed."""

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def ping(self) -> None:
        await self._rows("SELECT 1 AS ok")

    @classmethod
    def schema(cls) -> list[TableDDL]:
        """The DDL of every table family this store class mixes in."""
        return [ddl for c in cls.__mro__ if (ddl := c.__dict__.get("ddl")) is not None]
