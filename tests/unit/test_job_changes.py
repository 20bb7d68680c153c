"""Job events are pushed: each write of a job's row reaches the streams that watch it through
the catalog's change feed, on both backends (a trigger's ``pg_notify``; datagrams from the
SQLite store), in order and complete. The streams' fallback read is set far beyond the tests'
waits, so a notice that did not arrive fails the test instead of being polled for."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments.catalog import CatalogEngine
from serve_app.api.routes.jobs import EVENTS
from serve_app.catalog.souls import load_souls
from serve_app.jobs.book import JobError
from serve_app.jobs.desk import JobDesk, JobQueueConfig, UnknownJob
from serve_app.jobs.kinds.image import ImageJob
from serve_app.jobs.kinds.pack import load_variations
from serve_app.settings import Settings
from serve_app.storage import change_feed, open_store
from serve_app.storage.changes import ChangeFeed, DatagramFeed, listeners_dir
from serve_app.storage.sqlite import SQLiteStore
from tests.support import run, temporary_database
from tests.unit.handles import LocalHandle
from tests.unit.ingress_app import ingress_client
from tests.unit.world import World

SPEC = {"kind": "image", "soul_id": "nova", "cue": "a fox", "user_id": "u1"}
WAIT_S = 20  # far below the fallback read: only a notice ends a wait


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'catalog.db'}"
    else:
        with temporary_database() as url:
            yield url


class Book:
    """A catalog on the backend ``dsn`` names, and a desk whose streams wait on its feed."""

    def __init__(self, world: World, dsn: str) -> None:
        self.catalog = CatalogEngine(open_store(dsn))
        run(self.catalog.start(load_souls("config/souls.yaml")))
        settings = Settings(data_dir=world.db.parent, database_url=dsn)
        self.feed: ChangeFeed = change_feed(settings)
        self.desk = JobDesk(
            world.replica().deliverer,
            LocalHandle(self.catalog),
            world.objects,
            settings,
            load_variations(),
            self.feed,
            JobQueueConfig(events_keepalive_s=600),
        )

    def close(self) -> None:
        run(self.feed.close())
        run(self.catalog.close())


@pytest.fixture
def book(world: World, dsn: str) -> Iterator[Book]:
    b = Book(world, dsn)
    yield b
    b.close()


def names(frames: list[str]) -> list[str]:
    return [f.split("\n")[0].removeprefix("event: ") for f in frames]


async def take(stream: AsyncIterator[str], n: int) -> list[str]:
    return [await asyncio.wait_for(anext(stream), WAIT_S) for _ in range(n)]


def test_every_change_of_a_job_reaches_its_stream_in_order(book: Book) -> None:
    async def main() -> list[list[str]]:
        catalog = book.catalog
        job_id = (await catalog.submit_job("c1", SPEC, 1, 3, 10, 10)).doc.job_id  # type: ignore[union-attr]
        stream = book.desk.events("c1", job_id)
        seen = [await take(stream, 1)]  # the job as it is: queued
        leased = await catalog.lease_job("w1", 60_000)
        assert leased is not None
        seen.append(await take(stream, 2))  # running: its status, and its stage
        for step in (1, 2):
            await catalog.job_progress([f"c1/{job_id}/0"], "render", step, 2)
            seen.append(await take(stream, 1))
        error = JobError(type="Broken", detail="no")
        assert await catalog.finish_job(leased.lease, "failed", None, error)
        seen.append(await take(stream, 2))  # its last stage, then done
        with pytest.raises(StopAsyncIteration):
            await anext(stream)  # done is the last event
        return seen

    seen = run(main())
    assert [names(frames) for frames in seen] == [
        ["status"], ["status", "progress"], ["progress"], ["progress"], ["progress", "done"]
    ]  # fmt: skip
    assert '"step": 2' in seen[3][0] and '"status": "failed"' in seen[4][1]


def test_a_submit_answered_as_events_sends_its_answer_then_every_change_then_done(
    book: Book,
) -> None:
    """``POST /jobs`` with ``Accept: text/event-stream``: the submit's answer (``accepted``),
    then what ``GET /jobs/{job_id}/events`` sends, in order and complete."""

    async def main() -> tuple[list[list[str]], str]:
        catalog = book.catalog
        accepted = await book.desk.submit("c1", ImageJob.model_validate(SPEC))
        stream = book.desk.followed("c1", accepted)
        seen = [await take(stream, 2)]  # the answer, then the job as it is: queued
        leased = await catalog.lease_job("w1", 60_000)
        assert leased is not None and leased.doc.job_id == accepted.job_id
        seen.append(await take(stream, 2))  # running: its status, and its stage
        assert await catalog.finish_job(leased.lease, "succeeded", leased.doc.outcome, None)
        seen.append(await take(stream, 2))  # its last stage, then done
        with pytest.raises(StopAsyncIteration):
            await anext(stream)
        return seen, accepted.job_id

    seen, job_id = run(main())
    assert [names(frames) for frames in seen] == [
        ["accepted", "status"], ["status", "progress"], ["progress", "done"]
    ]  # fmt: skip
    assert f'"job_id": "{job_id}"' in seen[0][0] and '"status": "queued"' in seen[0][1]
    assert '"status": "succeeded"' in seen[2][1]


def test_post_jobs_asked_for_events_answers_them_and_json_stays_the_default(
    tmp_path: Path, embedder: LocalHandle
) -> None:
    """Over the routes: the submit's answer is the stream (200, text/event-stream) that ends
    with the job (cancelled from another request once it is queued); without that ``Accept``,
    202 and JSON."""
    engine = CatalogEngine(SQLiteStore(tmp_path / "catalog.db"))
    run(engine.start(load_souls("config/souls.yaml")))
    mine = {"Authorization": "Bearer key-a"}

    with ingress_client(Settings(data_dir=tmp_path), engine, embedder) as client:

        def cancel_once_queued() -> None:
            for _ in range(1000):  # until the submit below has queued its job
                if listed := client.get("/jobs", headers=mine).json()["jobs"]:
                    client.post(f"/jobs/{listed[0]['job_id']}/cancel", headers=mine)
                    return
                time.sleep(0.01)

        canceller = threading.Thread(target=cancel_once_queued)
        canceller.start()
        streamed = client.post("/jobs", json=SPEC, headers={**mine, "Accept": EVENTS})
        canceller.join()
        plain = client.post("/jobs", json={**SPEC, "user_id": "u2"}, headers=mine)
    run(engine.close())
    frames = [f + "\n\n" for f in streamed.text.split("\n\n") if f]
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith(EVENTS)
    assert names(frames) == ["accepted", "status", "progress", "done"]
    assert '"status": "cancelled"' in frames[-1]
    assert plain.status_code == 202 and plain.json()["status"] == "queued"


def test_a_stream_opened_reads_its_job_once_and_an_unknown_job_raises_before_it_starts(
    book: Book,
) -> None:
    async def main() -> tuple[list[str], int]:
        catalog = book.catalog
        handle = book.desk.catalog
        with pytest.raises(UnknownJob):
            await book.desk.opened_events("c1", "01JZZZZZZZZZZZZZZZZZZZZZZZ")
        job_id = (await catalog.submit_job("c1", SPEC, 1, 3, 10, 10)).doc.job_id  # type: ignore[union-attr]
        handle.calls.clear()
        stream = await book.desk.opened_events("c1", job_id)
        reads = handle.calls["get_job"]  # the first frame is read: the route answers 200 now
        await catalog.cancel_job("c1", job_id)
        return names([frame async for frame in stream]), reads

    assert run(main()) == (["status", "progress", "done"], 1)


def test_two_streams_of_one_replica_share_its_one_listener(book: Book) -> None:
    async def main() -> tuple[list[str], list[str], int]:
        catalog = book.catalog
        job_id = (await catalog.submit_job("c1", SPEC, 1, 3, 10, 10)).doc.job_id  # type: ignore[union-attr]
        first, second = book.desk.events("c1", job_id), book.desk.events("c1", job_id)
        await take(first, 1)
        await take(second, 1)
        listener = book.feed._listener
        await catalog.cancel_job("c1", job_id)  # queued: cancelled at once
        ends = await take(first, 2), await take(second, 2)
        assert book.feed._listener is listener
        return names(ends[0]), names(ends[1]), len(book.feed._waiting)

    ends = ["progress", "done"]  # its stage (cancelled), then done
    assert run(main()) == (ends, ends, 0)


def test_an_sqlite_feed_leaves_no_name_behind_and_the_store_drops_a_dead_ones(
    world: World, tmp_path: Path
) -> None:
    feed = DatagramFeed(world.db)
    folder = listeners_dir(world.db)

    async def main() -> list[str]:
        async with feed.watch("c1/j1"):
            listed = sorted(p.name for p in folder.iterdir())
        await feed.close()
        return listed

    listed = run(main())
    assert len(listed) == 1 and listed[0].split("-")[0].isdigit()
    assert not list(folder.iterdir())
    dead = folder / "999999999-1"  # a process that is gone
    dead.touch()
    store: Any = open_store(f"sqlite:///{world.db}")
    store._job_written("c1", "j1")
    assert not dead.exists()
    store.notices.close()
