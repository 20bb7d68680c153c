"""A worker's idle lease waits in the catalog, on both backends: it wakes when a job is queued
through another catalog replica (another store, another feed, the same database), when a retry
falls due, and returns empty after its bound; a cancelled lease strands no job. The bounds are
set far beyond what a woken lease takes, so a wake that did not come fails the test."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.catalog import CatalogEngine
from serve_app.catalog.souls import load_souls
from serve_app.jobs.book import JobError, Leased
from serve_app.settings import Settings
from serve_app.storage import change_feed, open_store
from serve_app.storage.changes import QUEUE
from tests.support import run, temporary_database

SPEC = {"kind": "image", "soul_id": "nova", "cue": "a fox", "user_id": "u1"}
BOUND_S = 20  # a waiting lease's bound: a woken lease returns long before it
LEASE_MS = 60_000


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        with temporary_database() as url:
            yield url


@pytest.fixture
def replicas(dsn: str, tmp_path: Path) -> Iterator[list[CatalogEngine]]:
    """Two Catalog replicas: each its own store and change feed over the one database."""
    settings = Settings(data_dir=tmp_path, database_url=dsn)
    engines = [CatalogEngine(open_store(dsn), changes=change_feed(settings)) for _ in range(2)]
    for engine in engines:
        run(engine.start(load_souls("config/souls.yaml")))
    yield engines
    for engine in engines:
        run(engine.close())


async def submit(catalog: CatalogEngine, client: str = "c1") -> str:
    submitted = await catalog.submit_job(client, SPEC, 1, 3, 100, 1000)
    assert submitted.doc is not None
    return submitted.doc.job_id


async def timed(call: Any) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    result = await call
    return result, loop.time() - t0


def test_a_waiting_lease_wakes_on_a_job_queued_through_another_replica(
    replicas: list[CatalogEngine],
) -> None:
    here, there = replicas

    async def main() -> tuple[Leased | None, float, str]:
        waiting = asyncio.ensure_future(timed(here.lease_job("w1", LEASE_MS, True, BOUND_S)))
        await asyncio.sleep(0.5)  # it looked, found nothing, and waits
        assert not waiting.done()
        job_id = await submit(there)
        (leased, took_s) = await asyncio.wait_for(waiting, BOUND_S + 5)
        return leased, took_s, job_id

    leased, took_s, job_id = run(main())
    assert leased is not None and leased.doc.job_id == job_id and leased.doc.status == "running"
    assert took_s < 5  # woken by the queue's notice, not by its bound


def test_a_waiting_lease_returns_empty_after_its_bound(replicas: list[CatalogEngine]) -> None:
    here, _ = replicas
    leased, took_s = run(timed(here.lease_job("w1", LEASE_MS, True, 0.5)))
    assert leased is None
    assert 0.5 <= took_s < 3


def test_a_waiting_lease_takes_a_retry_when_it_falls_due(replicas: list[CatalogEngine]) -> None:
    """The retry's release is noticed, found not yet due, and waited for until it is (no other
    notice comes)."""
    here, there = replicas

    async def main() -> tuple[Leased | None, float]:
        await submit(there)
        first = await there.lease_job("w0", LEASE_MS)
        assert first is not None
        error = JobError(type="StoreUnavailable", detail="away")
        assert await there.retry_job(first.lease, error, 800)
        return await timed(here.lease_job("w1", LEASE_MS, True, BOUND_S))

    leased, took_s = run(main())
    assert leased is not None and leased.doc.attempts == 2
    assert 0.5 < took_s < 5  # its backoff, not the bound


def test_a_lease_cancelled_as_it_took_a_job_hands_the_job_back(
    replicas: list[CatalogEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stopping worker drops its waiting call; if the catalog had just leased a job for it,
    the job is queued again at once (its attempt given back), not after the lease runs out."""
    here, there = replicas
    took, go_on = asyncio.Event(), asyncio.Event()
    start = here._start

    async def slow_start(lease: Any, *args: Any) -> Any:
        took.set()  # the queue row is leased to w1 now
        await go_on.wait()
        return await start(lease, *args)

    monkeypatch.setattr(here, "_start", slow_start)

    async def main() -> tuple[Leased | None, str]:
        job_id = await submit(there)
        waiting = asyncio.ensure_future(here.lease_job("w1", LEASE_MS, True, BOUND_S))
        await asyncio.wait_for(took.wait(), 5)
        waiting.cancel()
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        return await there.lease_job("w2", LEASE_MS), job_id

    leased, job_id = run(main())
    assert leased is not None and leased.doc.job_id == job_id
    assert leased.doc.attempts == 1  # the dropped lease's attempt was given back


def test_a_cancel_that_comes_with_a_notice_ends_the_wait(replicas: list[CatalogEngine]) -> None:
    """A notice and a cancel in one turn of the loop (a worker drops its call as the job that
    set its slot free queues a retry): the call ends cancelled at once. 3.11's wait_for took
    it for the notice alone; the call went on, and later leased a job for no one."""
    here, _ = replicas
    assert here.changes is not None

    async def main() -> asyncio.Future[Any]:
        waiting = asyncio.ensure_future(here.lease_job("w1", LEASE_MS, True, BOUND_S))
        await asyncio.sleep(0.5)  # waiting in the catalog now
        here.changes.changed(QUEUE)
        waiting.cancel()
        await asyncio.wait({waiting}, timeout=5)  # far below its bound
        return waiting

    assert run(main()).cancelled()


def test_taking_and_renewing_leases_wake_no_waiting_lease(
    replicas: list[CatalogEngine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a queue row added, released or removed is a notice: the leases and renewals of the
    running jobs (every ``lease_s / 3`` each) do not make every idle lease look again."""
    here, there = replicas
    looks = {"n": 0}
    look = here._lease_now

    async def counted(*args: Any) -> Any:
        looks["n"] += 1
        return await look(*args)

    monkeypatch.setattr(here, "_lease_now", counted)

    async def main() -> Leased | None:
        await submit(there)
        running = await there.lease_job("w0", LEASE_MS)
        assert running is not None
        waiting = asyncio.ensure_future(here.lease_job("w1", LEASE_MS, True, 1.5))
        await asyncio.sleep(0.3)
        for _ in range(3):
            assert await there.renew_job(running.lease, LEASE_MS)
            await asyncio.sleep(0.2)
        return await waiting

    assert run(main()) is None
    assert looks["n"] == 1  # its first look only: it returned at its bound
