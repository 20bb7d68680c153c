"""Shared by unit and integration tests: one event loop, and PostgreSQL databases of their own.

Tests that need PostgreSQL skip with a reason when no server answers, and fail instead when
``SOUL_TEST_STRICT=1`` (set by ``.ci/run``), so CI can never pass by skipping them.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import subprocess
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
import pytest

from deployments.store import scratch_database

T = TypeVar("T")
STRICT = os.environ.get("SOUL_TEST_STRICT") == "1"
POSTGRES_ADMIN_URL = os.environ.get(
    "SOUL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

_runner = asyncio.Runner()
atexit.register(_runner.close)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on one long-lived loop: a psycopg pool belongs to the loop that opened it."""
    return _runner.run(coro)


def skip_or_fail(reason: str) -> None:
    if STRICT:
        pytest.fail(f"{reason} (SOUL_TEST_STRICT=1 turns this skip into a failure)")
    pytest.skip(reason)


def require_postgres() -> None:
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        where = urlsplit(POSTGRES_ADMIN_URL).netloc.rpartition("@")[2]
        skip_or_fail(f"no PostgreSQL at {where}: {str(exc).strip()}")


@contextmanager
def temporary_database() -> Iterator[str]:
    """A new, empty database on the test server; dropped (connections and all) afterwards."""
    require_postgres()
    with scratch_database(POSTGRES_ADMIN_URL, "soul_test") as url:
        yield url


@contextmanager
def postgres_outage() -> Iterator[None]:
    """Stop the local PostgreSQL cluster for the duration, then start it again, whatever happens.

    Only for the machine's own cluster (the one `.ci/run` starts) with pg_ctlcluster at hand.
    """
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    host = urlsplit(POSTGRES_ADMIN_URL).hostname
    if not shutil.which("pg_ctlcluster") or not clusters or host not in ("127.0.0.1", "localhost"):
        skip_or_fail("stopping PostgreSQL needs the local cluster and pg_ctlcluster")
    control = ["pg_ctlcluster", "--skip-systemctl-redirect", clusters[-1], "main"]
    subprocess.run([*control, "stop", "-m", "fast"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run([*control, "start"], check=True, capture_output=True)
