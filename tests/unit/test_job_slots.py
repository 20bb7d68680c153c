"""The queued-job quota decided by one conditional insert (a slot claimed): submits that all
passed the quota's count before any of them wrote (a barrier holds them there) never all get
in, on SQLite and PostgreSQL; a route that writes before it queues (assets:generate) is refused
before it writes; a slot whose job finished, or never came, is taken again."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from deployments.catalog import CatalogEngine
from serve_app.api.routes.projects import desk
from serve_app.catalog import job_slots
from serve_app.catalog.souls import load_souls
from serve_app.jobs.book import Submitted
from serve_app.jobs.desk import TooManyJobs
from serve_app.projects.models import AssetSpec, ProjectDraft
from serve_app.settings import Settings
from serve_app.storage.sqlite import SQLiteStore
from tests.support import run
from tests.unit.handles import LocalHandle
from tests.unit.ingress_app import ingress_client
from tests.unit.test_job_book import book, postgres_url, spec  # noqa: F401 (fixtures)
from tests.unit.test_store import (
    assert_uses_primary_key,
    query_plan,
    statements_of,
    write_analyzed,
)

RACERS = 4


def held_after_the_count(engine: CatalogEngine, racers: int) -> None:
    """The first ``racers`` callers of ``job_refusal`` wait there until all of them have
    passed it: they all counted before any of them wrote. Later calls pass straight on."""
    count = engine.job_refusal
    barrier: list[asyncio.Barrier] = []
    calls = [0]

    async def counted(*args: Any) -> Submitted | None:
        refused = await count(*args)
        calls[0] += 1
        if calls[0] <= racers:
            if not barrier:
                barrier.append(asyncio.Barrier(racers))
            await barrier[0].wait()
        return refused

    engine.job_refusal = counted  # type: ignore[method-assign]


def test_concurrent_submits_never_both_take_the_last_slot(book: CatalogEngine) -> None:  # noqa: F811
    held_after_the_count(book, RACERS)

    async def race() -> list[Submitted]:
        submits = [book.submit_job("c1", spec(), 1, 3, 1, 1000) for _ in range(RACERS)]
        return list(await asyncio.gather(*submits))

    answers = run(race())
    assert sum(a.doc is not None for a in answers) == 1
    assert all("quota" in (a.refused or "") for a in answers if a.doc is None)
    assert len(run(book.list_jobs("c1", {}, None, 10))) == 1


def test_concurrent_tickets_never_both_take_the_last_slot(book: CatalogEngine) -> None:  # noqa: F811
    held_after_the_count(book, RACERS)

    async def race() -> list[Submitted | str]:
        return list(await asyncio.gather(*[book.admit_job("c1", 2, 1000) for _ in range(RACERS)]))

    answers = run(race())
    tickets = [a for a in answers if isinstance(a, str)]
    assert len(tickets) == 2  # a quota of two
    done = run(book.submit_job("c1", spec(), 1, 3, 2, 1000, ticket=tickets[0]))
    assert done.doc is not None and done.doc.job_id == tickets[0]  # its slot held already
    run(book.release_job_slot("c1", tickets[1]))  # the route failed before it submitted
    assert run(book.submit_job("c1", spec(), 1, 3, 2, 1000)).doc is not None
    assert run(book.submit_job("c1", spec(), 1, 3, 2, 1000)).doc is None  # two unfinished


def test_a_finished_or_never_written_jobs_slot_is_taken_again(
    book: CatalogEngine,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = run(book.submit_job("c1", spec(), 1, 3, 1, 1000)).doc
    assert first is not None
    assert run(book.submit_job("c1", spec(), 1, 3, 1, 1000)).doc is None
    leased = run(book.lease_job("w1", 60_000))
    assert leased is not None
    assert run(book.finish_job(leased.lease, "succeeded", None, None, conclude=True))
    again = run(book.submit_job("c1", spec(), 1, 3, 1, 1000)).doc
    assert again is not None  # the finished job's slot, taken again
    ticket = run(book.admit_job("c2", 1, 1000))
    assert isinstance(ticket, str)  # a ticket whose job is never submitted...
    assert isinstance(run(book.admit_job("c2", 1, 1000)), Submitted)  # ...holds its slot,
    monkeypatch.setattr(job_slots, "GRACE_MS", 0)  # until its grace is over
    assert isinstance(run(book.admit_job("c2", 1, 1000)), str)


def test_a_clients_slots_are_one_primary_key_prefix(book: CatalogEngine) -> None:  # noqa: F811
    db = book.store
    rows = [
        (f"client-{c:05d}", slot, f"job-{c}-{slot}", 1) for c in range(2000) for slot in range(5)
    ]
    sql = "INSERT INTO job_slot VALUES (?, ?, ?, ?)"
    write_analyzed(db, [(sql, rows)])
    for statement, params in statements_of(db, db.job_slots("client-01000")):
        assert_uses_primary_key(db, query_plan(db, statement, params), "job_slot")
    assert [r["slot"] for r in run(db.job_slots("client-01000"))] == [0, 1, 2, 3, 4]


@pytest.fixture
def served(tmp_path: Path, embedder: LocalHandle) -> Iterator[tuple[TestClient, CatalogEngine]]:
    settings = Settings(data_dir=tmp_path)
    settings.jobs.job_queued_quota = 1
    engine = CatalogEngine(SQLiteStore(tmp_path / "catalog.db"))
    run(engine.start(load_souls("config/souls.yaml")))
    with ingress_client(settings, engine, embedder) as made:
        yield made, engine
    run(engine.close())


def test_concurrent_asset_generates_over_a_quota_of_one_write_one_asset(
    served: tuple[TestClient, CatalogEngine],
) -> None:
    client, engine = served
    services = client.app.state.services  # type: ignore[attr-defined]
    owner = "client-a"
    pid = run(engine.create_project(owner, ProjectDraft(name="P"))).project_id
    held_after_the_count(engine, 2)
    lamp = AssetSpec(asset_type="prop", name="Lamp", canonical_prompt="a brass lamp", seed=1)

    async def race() -> list[Any]:
        made = [desk(services).generate(owner, pid, lamp) for _ in range(2)]
        return list(await asyncio.gather(*made, return_exceptions=True))

    answers = run(race())
    assert sum(isinstance(a, dict) for a in answers) == 1
    assert sum(isinstance(a, TooManyJobs) for a in answers) == 1, answers
    assert len(run(engine.store.project_asset_labels(pid))) == 1  # the refused one wrote nothing
    assert len(run(engine.list_jobs(owner, {}, None, 10))) == 1
