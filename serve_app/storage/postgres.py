"""The PostgreSQL catalog backend (psycopg 3 + psycopg-pool), its job change feed, and scratch
databases."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any
from urllib.parse import urlsplit

import psycopg
import psycopg.conninfo
import psycopg.sql
from psycopg.rows import dict_row
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from serve_app.errors import first_line
from serve_app.storage.changes import CHANNEL, ChangeFeed
from serve_app.storage.store import Row, StoreUnavailable
from serve_app.storage.tables import CatalogStore

# Replicas starting together apply the DDL one at a time (CREATE IF NOT EXISTS can still race).
_DDL_LOCK_ID = 0x50A1_5E7E


async def _json_as_text(conn: psycopg.AsyncConnection[Any]) -> None:
    conn.adapters.register_loader("jsonb", TextLoader)


class PostgresStore(CatalogStore):
    """psycopg 3 through an async pool, opened and closed with the Catalog replica."""

    def __init__(self, dsn: str, *, pool_min: int, pool_max: int, timeout_s: float) -> None:
        self.dsn = dsn
        self.pool_min, self.pool_max, self.timeout_s = pool_min, pool_max, timeout_s
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] | None = None

    async def open(self) -> None:
        await self.close()
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            self.dsn,
            min_size=self.pool_min,
            max_size=self.pool_max,
            timeout=self.timeout_s,
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": max(1, round(self.timeout_s)),
            },
            configure=_json_as_text,
            check=self._check,
            open=False,
            name="soul-catalog",
        )
        try:
            await pool.open(wait=True, timeout=self.timeout_s)
        except PoolTimeout as exc:
            await pool.close()
            raise StoreUnavailable(f"PostgreSQL unreachable within {self.timeout_s} s") from exc
        self._pool = pool
        async with self._connection() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK_ID,))
            await conn.execute("\n".join(ddl.postgres for ddl in self.schema()))

    async def _check(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """One empty round trip per checkout, so that a connection the server dropped is
        replaced before use instead of failing a request. A restart, a failover or
        ``pg_terminate_backend`` drops them all at once: the first broken one found replaces
        every idle one, else each checkout would try the next broken one after a growing
        back-off (0 s, 1 s, 2 s: psycopg-pool's) and outwait the pool timeout."""
        try:
            await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            if self._pool is not None:
                await self._pool.drain()
            raise

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        if self._pool is None:
            raise StoreUnavailable("PostgreSQL store is not open")
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (PoolTimeout, psycopg.OperationalError, psycopg.InterfaceError) as exc:
            raise StoreUnavailable(f"PostgreSQL: {first_line(exc)}") from exc

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return (await self._execute(sql, params))[0]

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        return (await self._execute(sql, params))[1]

    async def _execute(self, sql: str, params: Sequence[Any]) -> tuple[list[Row], int]:
        """One statement, its rows and row count; once more on another connection if the server
        dropped this one under it (a restart, a failover, ``pg_terminate_backend``). Each
        statement is a read or an idempotent write (a last-write-wins upsert, an
        insert-if-absent claim, a compare-and-set), so a repeat after a commit whose answer was
        lost changes nothing more: at worst a claim is seen as lost and the next one is made."""
        tries = 2
        while True:
            tries -= 1
            async with self._connection() as conn:
                try:
                    cur = await conn.execute(_placeholders(sql), params)
                    return (await cur.fetchall() if cur.description else []), cur.rowcount
                except psycopg.OperationalError:
                    if not tries or not conn.broken:
                        raise


class PostgresFeed(ChangeFeed):
    """One ``LISTEN`` connection per replica for the job rows' ``pg_notify`` (a trigger sends
    one per update, whichever replica wrote); it reconnects after a growing pause."""

    def __init__(self, dsn: str, timeout_s: float) -> None:
        super().__init__()
        self.dsn, self.timeout_s = dsn, timeout_s

    async def _listen(self) -> None:
        pause_s = 0.5
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.dsn, autocommit=True, connect_timeout=max(1, round(self.timeout_s))
                )
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening()
                    pause_s = 0.5
                    async for notice in conn.notifies():
                        self.changed(notice.payload)
            except psycopg.Error as exc:
                logging.getLogger("ray.serve").warning("job change feed: %s", first_line(exc))
            await asyncio.sleep(pause_s)
            pause_s = min(2 * pause_s, 10.0)


def _placeholders(sql: str) -> str:
    """The shared statements use ``?``; psycopg wants ``%s`` (none of them contains a ``%``)."""
    return sql.replace("?", "%s")


def create_database(dsn: str) -> bool:
    """Create the PostgreSQL database ``dsn`` names, if it is missing; True when created."""
    name, admin = _database_and_admin(dsn)
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
        return True


def drop_database(dsn: str) -> None:
    """Drop the PostgreSQL database ``dsn`` names, closing its connections (scratch databases)."""
    name, admin = _database_and_admin(dsn)
    with psycopg.connect(admin, autocommit=True) as conn:
        drop = psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(drop.format(psycopg.sql.Identifier(name)))


@contextmanager
def scratch_database(server_dsn: str, prefix: str) -> Iterator[str]:
    """A new database ``<prefix>_<random>`` on the server ``server_dsn`` points at; dropped
    afterwards (tests and benchmarks)."""
    dsn = urlsplit(server_dsn)._replace(path=f"/{prefix}_{secrets.token_hex(6)}").geturl()
    create_database(dsn)
    try:
        yield dsn
    finally:
        drop_database(dsn)


def _database_and_admin(dsn: str) -> tuple[str, str]:
    """The database a DSN names, and a DSN of the same server's maintenance database."""
    name = psycopg.conninfo.conninfo_to_dict(dsn).get("dbname")
    if not name:
        raise ValueError("the PostgreSQL DSN names no database")
    return str(name), psycopg.conninfo.make_conninfo(dsn, dbname="postgres")
