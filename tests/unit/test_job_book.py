"""The job book on both catalog backends: leases, fencing, priority, fairness between clients,
cancel, retries, hand-back, quotas, listing, stats and estimates."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.catalog import CatalogEngine
from serve_app.catalog.job_stats import Run
from serve_app.catalog.souls import load_souls
from serve_app.errors import NoStyle, UnknownSoul
from serve_app.jobs.book import JobError, Outcome
from serve_app.storage import open_store
from serve_app.storage.sqlite import SQLiteStore
from tests.support import run, temporary_database

LEASE_MS = 60_000
JOB_TABLES = "job, job_queue, work_lock, user_seen, job_slot"


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def book(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatalogEngine]:
    if request.param == "sqlite":
        engine = CatalogEngine(SQLiteStore(tmp_path / "catalog.db"))
    else:
        engine = CatalogEngine(open_store(request.getfixturevalue("postgres_url")))
    run(engine.start(load_souls("config/souls.yaml")))
    run(engine.store._write(f"DELETE FROM {JOB_TABLES.split(', ')[0]}"))
    for table in JOB_TABLES.split(", ")[1:]:
        run(engine.store._write(f"DELETE FROM {table}"))
    yield engine
    run(engine.close())


def spec(user: str = "u1", priority: str = "normal", cue: str = "a fox") -> dict[str, Any]:
    return {"kind": "image", "soul_id": "nova", "cue": cue, "user_id": user, "priority": priority}


def submit(book: CatalogEngine, client: str = "c1", quota: int = 100, **kw: Any) -> str:
    submitted = run(book.submit_job(client, spec(**kw), 1, 3, quota, 1000))
    assert submitted.doc is not None, submitted.refused
    return submitted.doc.job_id


def lease(book: CatalogEngine, owner: str = "w1", lease_ms: int = LEASE_MS) -> Any:
    return run(book.lease_job(owner, lease_ms))


def test_a_submitted_job_is_queued_then_leased_once_and_marked_running(
    book: CatalogEngine,
) -> None:
    job_id = submit(book)
    doc = run(book.get_job("c1", job_id))
    assert doc is not None and doc.status == "queued" and doc.attempts == 0
    leased = lease(book)
    assert leased.doc.job_id == job_id and leased.doc.status == "running"
    assert leased.doc.attempts == 1 and leased.lease_version == 1
    assert lease(book, "w2") is None  # held: nobody else gets it
    assert run(book.get_job("c1", job_id)).status == "running"


def test_high_priority_is_leased_before_normal(book: CatalogEngine) -> None:
    first, second = submit(book, cue="one"), submit(book, cue="two")
    urgent = submit(book, priority="high", cue="three")
    order = [lease(book).doc.job_id for _ in range(3)]
    assert order == [urgent, first, second]


def test_clients_take_turns_so_a_burst_does_not_starve_a_single_job(book: CatalogEngine) -> None:
    burst = [submit(book, client="bulk", cue=f"cue {i}") for i in range(5)]
    single = submit(book, client="solo")
    order = [lease(book).doc.job_id for _ in range(6)]
    assert order.index(single) <= 1  # served within the first turn, not after the burst
    assert [j for j in order if j != single] == burst  # each client's own jobs oldest first


def test_a_lease_that_ran_out_fences_off_its_old_holder(book: CatalogEngine) -> None:
    submit(book)
    old = lease(book, "w1", lease_ms=1)
    time.sleep(0.01)  # the lease runs out: w1 stalled, or its replica died
    new = lease(book, "w2")
    assert new.doc.job_id == old.doc.job_id and new.doc.attempts == 2
    assert new.lease_version == old.lease_version + 1
    outcome = Outcome(items=[{"anything": 1}])
    assert run(book.save_outcome(old.lease, outcome)) is False  # the stale writer writes nothing
    assert run(book.finish_job(old.lease, "succeeded", outcome, None)) is False
    assert run(book.renew_job(old.lease, LEASE_MS)) is False
    assert run(book.finish_job(new.lease, "succeeded", outcome, None)) is True
    doc = run(book.get_job("c1", new.doc.job_id))
    assert doc.status == "succeeded" and doc.progress.done == 1
    assert run(book.finish_job(new.lease, "failed", None, None)) is False  # finished is final


def test_a_queued_job_is_cancelled_at_once_and_concluded_by_a_worker(book: CatalogEngine) -> None:
    job_id = submit(book)
    doc = run(book.cancel_job("c1", job_id))
    assert doc.status == "cancelled" and doc.finished_at_ts is not None
    leased = lease(book)  # a worker still picks it up, to send its webhook and clear it
    assert leased.doc.job_id == job_id and leased.doc.finished
    run(book.conclude_job(leased.lease))
    assert lease(book) is None and run(book.job_stats())["queued"] == {}


def test_a_cancelled_queued_job_no_longer_counts_as_waiting(book: CatalogEngine) -> None:
    job_id = submit(book, quota=1)
    run(book.cancel_job("c1", job_id))
    assert run(book.job_stats())["queued"] == {}
    assert run(book.job_backlog())["queued_jobs"] == 0
    assert submit(book, quota=1)  # nor against the quota


def test_cancelling_a_running_job_asks_its_worker(book: CatalogEngine) -> None:
    job_id = submit(book)
    leased = lease(book)
    doc = run(book.cancel_job("c1", job_id))
    assert doc.status == "running" and doc.cancel_requested
    assert run(book.cancel_requested(leased.lease)) is True


def test_a_retried_job_waits_out_its_backoff(book: CatalogEngine) -> None:
    job_id = submit(book)
    leased = lease(book)
    error = JobError(type="StoreUnavailable", detail="catalog store unavailable")
    assert run(book.retry_job(leased.lease, error, delay_ms=300))
    doc = run(book.get_job("c1", job_id))
    assert doc.status == "queued" and doc.error == error
    assert lease(book) is None  # not before its backoff
    time.sleep(0.35)
    again = lease(book)
    assert again.doc.job_id == job_id and again.doc.attempts == 2


def test_a_job_handed_back_is_leasable_at_once_with_its_attempt_returned(
    book: CatalogEngine,
) -> None:
    submit(book)
    leased = lease(book)
    assert run(book.hand_back(leased.lease))
    again = lease(book, "w2")
    assert again.doc.attempts == 1


def test_quota_and_rate_refuse_with_the_limit_named(book: CatalogEngine) -> None:
    submit(book, quota=2)
    submit(book, quota=2)
    refused = run(book.submit_job("c1", spec(), 1, 3, 2, 1000))
    assert refused.doc is None and "quota" in (refused.refused or "")
    assert submit(book, client="c2", quota=2)  # another client has its own quota
    by_rate = run(book.submit_job("c3", spec(), 1, 3, 100, 0))
    assert by_rate.doc is None and "rate" in (by_rate.refused or "")


def test_a_styled_submit_refuses_an_unknown_soul_or_one_without_a_style_writing_nothing(
    book: CatalogEngine,
) -> None:
    with pytest.raises(UnknownSoul):
        run(book.submit_job("c1", {**spec(), "soul_id": "ghost"}, 1, 3, 100, 1000, styled=True))
    run(book.delete_style("nova"))
    with pytest.raises(NoStyle):
        run(book.submit_job("c1", spec(), 1, 3, 100, 1000, styled=True))
    assert run(book.list_jobs("c1", {}, None, 10)) == []
    assert run(book.submit_job("c1", spec(), 1, 3, 100, 1000)).doc is not None  # not asked


def test_clients_list_only_their_own_jobs_newest_first_a_page_at_a_time(
    book: CatalogEngine,
) -> None:
    mine = [submit(book, cue=f"cue {i}", user=f"u{i % 2}") for i in range(5)]
    submit(book, client="other")
    first = run(book.list_jobs("c1", {}, None, 3))
    rest = run(book.list_jobs("c1", {}, first[-1].job_id, 3))
    assert [d.job_id for d in first + rest] == mine[::-1]
    assert [d.job_id for d in run(book.list_jobs("c1", {"user_id": "u1"}, None, 10))] == [
        mine[3],
        mine[1],
    ]
    assert run(book.get_job("other", mine[0])) is None  # another client's job does not exist


def test_stats_and_estimates_come_from_measured_runs(book: CatalogEngine) -> None:
    assert run(book.estimate_job("image", "nova", 1))["estimated_s"] is None
    submit(book)
    leased = lease(book)
    submit(book, cue="waiting")
    run(book.worker_alive("w1", LEASE_MS))
    stats = run(book.job_stats())
    assert stats["running"] == {"image": {"normal": 1}}
    assert stats["queued"] == {"image": {"normal": 1}} and stats["workers_alive"] == 1
    run(book.finish_job(leased.lease, "succeeded", Outcome(items=[{}]), None))
    stats = run(book.job_stats())
    assert stats["finished_in_window"] == 1 and stats["run_s"]["p50"] is not None
    estimate = run(book.estimate_job("image", "nova", 2))
    assert estimate["estimated_s"] is not None and estimate["queue_ahead"] == 2


def test_a_claim_made_for_a_job_item_is_found_again(book: CatalogEngine) -> None:
    store = book.store
    assert run(store.claim("u1", "v1", 1, "nova:k", "c1/j1/0"))
    assert run(store.claim("u1", "v2", 2))
    assert run(store.claimed_via("u1", "c1/j1/0")) == ("nova:k", "v1")
    assert run(store.claimed_via("u1", "c1/j1/1")) is None
    assert run(store.claimed_via("u2", "c1/j1/0")) is None


def test_the_backlog_counts_waiting_and_leased_jobs(book: CatalogEngine) -> None:
    submit(book)
    submit(book, cue="second")
    lease(book)
    assert run(book.job_backlog()) == {"queued_jobs": 1.0, "running_jobs": 1.0}


def test_a_generate_all_estimate_counts_each_stage_at_its_measured_time(
    book: CatalogEngine,
) -> None:
    configured = run(book.estimate_stages({"portrait": 2, "frame": 10}, "prj_x"))
    assert configured["stages"] == {
        "portrait": {"count": 2, "per_item_s": 20.0, "basis": "configured"},
        "frame": {"count": 10, "per_item_s": 25.0, "basis": "configured"},
    }
    assert configured["estimated_s"] == 2 * 20 + 10 * 25  # nothing queued ahead
    ts = int(time.time() * 1000)
    for run_ms, items in ((12_000, 3), (8_000, 2), (30_000, 3)):  # 4 s, 4 s, 10 s a portrait
        book._ran(Run(ts, "asset_generate", "prj_x", 0, run_ms, items))
    book._ran(Run(ts, "scene_render", "prj_other", 0, 6_000, 2))  # 3 s a frame, elsewhere
    measured = run(book.estimate_stages({"portrait": 2, "frame": 10}, "prj_x"))
    assert measured["stages"]["portrait"] == {"count": 2, "per_item_s": 4.0, "basis": "measured"}
    assert measured["stages"]["frame"] == {"count": 10, "per_item_s": 3.0, "basis": "measured"}
    assert measured["estimated_s"] == 2 * 4 + 10 * 3
