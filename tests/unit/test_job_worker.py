"""The job worker without Ray, over the real engines (the world of test_delivery): jobs end as
they should, retries go on where they stopped and deliver once, and the render interrupt works."""

from __future__ import annotations

import ast
import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np
import pytest

from deployments.renderer import RendererConfig, RendererEngine, RenderInterrupted
from serve_app.diffusion.sources import ModelManager
from serve_app.errors import InvalidRequest
from serve_app.jobs.book import JobDoc
from serve_app.jobs.desk import JobDesk
from serve_app.jobs.kinds import KINDS, LEASE_LOOKUPS
from serve_app.jobs.kinds import rebuild_keys as rebuild
from serve_app.jobs.kinds.image import ImageJob
from serve_app.jobs.kinds.pack import PackJob, load_variations
from serve_app.jobs.kinds.rebuild_keys import RebuildKeysJob
from serve_app.jobs.kinds.selfie import SelfieJob
from serve_app.jobs.runner import JobRunner, JobWorkerConfig
from serve_app.jobs.spec import RESERVE_CLIENT, RESERVE_LANE
from serve_app.prompts import key_hash, pk_id
from serve_app.schemas import Frames, PromptKey, RenderJob
from serve_app.settings import Settings
from serve_app.storage.store import StoreUnavailable
from tests.support import run
from tests.unit.handles import LocalHandle
from tests.unit.world import Gate, Replica, World

VARIATIONS = load_variations()
U1 = "c1/u1"  # user u1 of client c1, as the catalog knows them


class Jobs:
    """One worker and the desk the routes use, on one replica of the world."""

    def __init__(self, world: World, replica: Replica, **config: Any) -> None:
        self.replica = replica
        self.catalog = LocalHandle(replica.catalog)
        self.published: list[JobDoc] = []
        self.config = JobWorkerConfig(backoff_s=0.01, **config)
        self.worker = self.runner()
        settings = Settings(data_dir=world.db.parent)
        self.desk = JobDesk(
            replica.deliverer,
            self.catalog,
            world.objects,
            settings,
            VARIATIONS,
            world.feed(),
        )

    def runner(self) -> JobRunner:
        async def publish(doc: JobDoc) -> None:
            self.published.append(doc)

        return JobRunner(self.replica.deliverer, self.catalog, publish, VARIATIONS, self.config)

    def submit(self, spec: ImageJob | PackJob | SelfieJob, client: str = "c1") -> str:
        return run(self.desk.submit(client, spec)).job_id

    def work_once(self, worker: JobRunner | None = None) -> bool:
        """Lease one job and work on it to the end of this attempt; False: nothing to lease."""
        worker = worker or self.worker
        leased = run(self.replica.catalog.lease_job(worker.owner, 60_000, lookups=LEASE_LOOKUPS))
        if leased is None:
            return False
        run(worker.work(leased))
        return True

    def doc(self, job_id: str, client: str = "c1") -> JobDoc:
        return run(self.desk.job(client, job_id))


def image(cue: str = "a red fox", user: str = "u1", **kw: Any) -> ImageJob:
    return ImageJob(kind="image", soul_id="nova", cue=cue, user_id=user, **kw)


def via_claims(world: World, user: str, job_id: str) -> list[str]:
    rows = world.rows(
        "SELECT via FROM user_seen WHERE user_id = ? AND via LIKE ?", user, f"%{job_id}%"
    )
    return [r[0] for r in rows]


def test_an_image_job_delivers_once_and_ends_succeeded_with_its_webhook(
    world: World, tmp_path: Path
) -> None:
    jobs = Jobs(world, world.replica())
    job_id = jobs.submit(image(webhook_url="https://example.com/hook"))
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "succeeded" and doc.progress.done == 1 and doc.attempts == 1
    item = doc.outcome.items[0]
    assert item is not None and item["cache"] == "miss"
    assert world.seen(U1) == {item["variant"]["variant_id"]}
    assert via_claims(world, U1, job_id) == [f"c1/{job_id}/0"]
    assert [d.job_id for d in jobs.published] == [job_id]  # the webhook went out once
    assert not jobs.work_once()  # and the job left the queue


def test_a_job_answered_by_a_hit_is_claimed_with_its_lease_and_ended_in_one_write(
    world: World,
) -> None:
    """The lease (which writes the start) claims an image job's hit, so the worker's only call
    is the one that writes its end with its result and takes it off the queue: no lookup of
    its own, no progress write, no save of its one item, no read of the job (it has no webhook
    to send)."""
    replica = world.replica()
    jobs = Jobs(world, replica)
    replica.image("a red fox", "c1/u0")  # the variant u1's job gets as a hit
    job_id = jobs.submit(image())
    jobs.catalog.calls.clear()
    replica.handles.catalog.calls.clear()
    assert jobs.work_once()
    calls = jobs.catalog.calls + replica.handles.catalog.calls
    assert calls == {"finish_job": 1}
    assert not jobs.work_once()  # it left the queue
    doc = jobs.doc(job_id)
    item = doc.outcome.items[0]
    assert doc.status == "succeeded" and doc.progress.done == 1
    assert item is not None and item["cache"] == "hit"
    assert via_claims(world, U1, job_id) == [f"c1/{job_id}/0"]


def test_a_lease_whose_lookup_broke_off_after_its_claim_delivers_that_claim_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = world.replica()
    jobs = Jobs(world, replica)
    replica.image("a red fox", "c1/u0")
    replica.image("a red fox", "c1/u0")  # two variants: a second claim would find one
    job_id = jobs.submit(image())
    lookup = replica.catalog.lookup

    async def claims_then_breaks(*args: Any) -> Any:
        await lookup(*args)
        raise StoreUnavailable("the connection dropped after the claim")

    monkeypatch.setattr(replica.catalog, "lookup", claims_then_breaks)
    leased = run(replica.catalog.lease_job(jobs.worker.owner, 60_000, lookups=LEASE_LOOKUPS))
    monkeypatch.setattr(replica.catalog, "lookup", lookup)
    assert leased is not None and leased.looked is not None and leased.looked.lookup is None
    run(jobs.worker.work(leased))
    doc = jobs.doc(job_id)
    item = doc.outcome.items[0]
    assert doc.status == "succeeded" and item is not None and item["cache"] == "hit"
    assert world.seen(U1) == {item["variant"]["variant_id"]}  # the lease's claim, not another
    assert via_claims(world, U1, job_id) == [f"c1/{job_id}/0"]


def test_a_pack_gives_distinct_unseen_variants_and_reports_failed_items_as_partial(
    world: World, tmp_path: Path
) -> None:
    class Picky:
        """A renderer that refuses one pose: a permanent failure of that item only."""

        def render(self, job: RenderJob) -> Frames:
            if "arms crossed" in job.prompt:
                raise InvalidRequest("pose refused")
            return world.renderer.render(job)

    jobs = Jobs(world, world.replica(renderer=Picky()))
    pack = PackJob(kind="pack", soul_id="nova", user_id="u1", cue="a cat", count=5, vary="pose")
    job_id = jobs.submit(pack)
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "partial" and doc.progress.done == 5
    delivered = [i["variant"]["variant_id"] for i in doc.outcome.items if i is not None]
    assert len(delivered) == 4 == len(set(delivered)) and world.seen(U1) == set(delivered)
    [failure] = doc.outcome.failed
    assert failure.index == VARIATIONS["pose"].index("arms crossed")
    assert failure.error.type == "InvalidRequest" and failure.error.detail == "pose refused"


def test_a_transient_failure_is_retried_and_a_permanent_one_fails_at_once(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = world.replica()
    jobs = Jobs(world, replica)
    flaky = {"left": 1}
    original = replica.catalog.claim_unseen

    async def claim_unseen(*args: Any) -> Any:
        if flaky["left"]:
            flaky["left"] -= 1
            raise StoreUnavailable("catalog away")
        return await original(*args)

    monkeypatch.setattr(replica.catalog, "claim_unseen", claim_unseen)
    job_id = jobs.submit(image())
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "queued" and doc.error and doc.error.type == "StoreUnavailable"
    run(asyncio.sleep(0.05))  # its backoff
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "succeeded" and doc.attempts == 2
    assert len(via_claims(world, U1, job_id)) == 1

    ghost = jobs.submit(image(cue="a ghost soul"), client="c1")
    run(replica.catalog.delete_style("nova"))
    assert jobs.work_once()
    doc = jobs.doc(ghost)
    assert doc.status == "failed" and doc.attempts == 1 and not doc.dead_letter
    assert doc.error and doc.error.type == "NoStyle"


def test_a_job_failing_transiently_every_time_becomes_a_dead_letter(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = world.replica()
    jobs = Jobs(world, replica)

    async def down(*args: Any) -> Any:
        raise StoreUnavailable("catalog away")

    monkeypatch.setattr(replica.catalog, "claim_unseen", down)
    job_id = jobs.submit(image())
    for _ in range(3):
        run(asyncio.sleep(0.1))
        assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "failed" and doc.dead_letter and doc.attempts == 3
    failed = run(jobs.desk.page("c1", {"status": "failed"}, None, 10))
    assert [j.job_id for j in failed.jobs] == [job_id] and failed.jobs[0].dead_letter


def test_a_worker_that_dies_after_its_claim_delivers_once_when_retried(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first worker claims a variant for the user and dies before recording the item; the
    next attempt finds that claim (by its job item) and delivers it instead of another one."""
    replica = world.replica()
    jobs = Jobs(world, replica, lease_s=0.3)
    job_id = jobs.submit(image())
    original = replica.catalog.finish_job

    async def die(*args: Any) -> Any:
        raise asyncio.CancelledError  # the replica is gone mid-call: nothing more is written

    monkeypatch.setattr(replica.catalog, "finish_job", die)  # an image's item is recorded there
    leased = run(jobs.replica.catalog.lease_job(jobs.worker.owner, 300))
    with pytest.raises(asyncio.CancelledError):
        run(jobs.worker.work(leased))
    claimed = world.seen(U1)
    assert len(claimed) == 1 and jobs.doc(job_id).status == "running"

    monkeypatch.setattr(replica.catalog, "finish_job", original)
    run(asyncio.sleep(0.35))  # the dead worker's lease runs out
    assert jobs.work_once(jobs.runner())  # another worker
    doc = jobs.doc(job_id)
    assert doc.status == "succeeded" and doc.attempts == 2
    item = doc.outcome.items[0]
    assert item is not None and {item["variant"]["variant_id"]} == claimed == world.seen(U1)


def test_a_stopping_worker_hands_its_job_back(world: World, tmp_path: Path) -> None:
    jobs = Jobs(world, world.replica())
    job_id = jobs.submit(image())

    async def stop_soon() -> None:
        await asyncio.sleep(0.05)
        jobs.worker.stop()

    async def main() -> None:
        leased = await jobs.replica.catalog.lease_job(jobs.worker.owner, 60_000)
        await asyncio.gather(jobs.worker.work(leased), stop_soon())

    run(main())
    doc = jobs.doc(job_id)
    assert doc.status == "queued" and doc.attempts == 0
    assert jobs.work_once(jobs.runner())
    assert jobs.doc(job_id).status == "succeeded"
    assert len(world.seen(U1)) == 1  # delivered once, whatever the first lease had done


def test_events_stream_the_state_then_progress_and_items_then_done(
    world: World, tmp_path: Path
) -> None:
    jobs = Jobs(world, world.replica())
    pack = PackJob(kind="pack", soul_id="nova", user_id="u1", cues=["a cat", "a dog", "an owl"])
    job_id = jobs.submit(pack)

    async def main() -> list[str]:
        async def listen() -> list[str]:
            return [frame async for frame in jobs.desk.events("c1", job_id)]

        listening = asyncio.create_task(listen())
        await asyncio.sleep(0.1)
        leased = await jobs.replica.catalog.lease_job(jobs.worker.owner, 60_000)
        await jobs.worker.work(leased)
        return await asyncio.wait_for(listening, 30)

    frames = run(main())
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames if f.startswith("event:")]
    assert names[0] == "status" and names[-1] == "done"
    assert names.count("item") == 3 and "progress" in names


def test_a_render_stops_at_the_step_its_stop_was_set(models_dir: Path) -> None:
    engine = RendererEngine(ModelManager(models_dir), RendererConfig(steps=12, width=64, height=64))
    stop, steps = threading.Event(), []

    def on_step(step: int, total: int) -> None:
        steps.append((step, total))
        if step == 3:
            stop.set()

    job = RenderJob(
        style_id="s", base_model_ref="tiny-sdxl", prompt="a fox", negative_prompt="", seed=1
    )
    with pytest.raises(RenderInterrupted):
        engine.render(job, on_step, stop)
    assert steps == [(1, 12), (2, 12), (3, 12)]
    assert engine.render(job, on_step).pixels.size  # the next render runs whole again


def test_a_selfie_job_recovered_after_a_crash_keeps_its_place(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = world.replica()
    jobs = Jobs(world, replica, lease_s=0.3)
    spec = SelfieJob(kind="selfie", soul_id="nova", city_key="paris", mood="happy", user_id="u1")
    job_id = jobs.submit(spec)
    original = replica.catalog.finish_job

    async def die(*args: Any) -> Any:
        raise asyncio.CancelledError

    monkeypatch.setattr(replica.catalog, "finish_job", die)
    leased = run(replica.catalog.lease_job(jobs.worker.owner, 300))
    with pytest.raises(asyncio.CancelledError):
        run(jobs.worker.work(leased))
    [logged] = world.rows("SELECT landmark_key, angle_key FROM landmark_log WHERE user_id = ?", U1)
    monkeypatch.setattr(replica.catalog, "finish_job", original)
    run(asyncio.sleep(0.35))
    assert jobs.work_once(jobs.runner())
    doc = jobs.doc(job_id)
    item = doc.outcome.items[0]
    assert doc.status == "succeeded" and item is not None
    assert (item["landmark_key"], item["angle"]) == logged  # the shot the first attempt took
    assert len(world.seen(U1)) == 1
    view = run(jobs.desk.view("c1", job_id))
    assert view.result is not None and getattr(view.result, "landmark_key", None) == logged[0]


def test_work_cancelled_from_elsewhere_is_retried_and_the_slot_goes_on(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = world.replica()
    jobs = Jobs(world, replica)
    original = replica.catalog.claim_unseen
    cancelled = {"left": 1}

    async def claim_unseen(*args: Any) -> Any:
        if cancelled["left"]:
            cancelled["left"] -= 1
            raise asyncio.CancelledError  # e.g. a call a dying replica had in flight
        return await original(*args)

    monkeypatch.setattr(replica.catalog, "claim_unseen", claim_unseen)
    job_id = jobs.submit(image())
    assert jobs.work_once()
    doc = jobs.doc(job_id)
    assert doc.status == "queued" and doc.error and doc.error.type == "WorkInterrupted"
    run(asyncio.sleep(0.05))
    assert jobs.work_once() and jobs.doc(job_id).status == "succeeded"


def test_a_key_rebuild_reembeds_keeps_ids_and_a_retry_goes_on_where_it_stopped(
    world: World, embedder: LocalHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = world.replica()
    jobs, catalog = Jobs(world, replica), replica.catalog
    tags = "anime outlines pastel"
    # Keys as an older release wrote them: its normalization kept "the", its embedder differed.
    stale = {
        "fox red the | " + tags: "fox red | " + tags,
        "blue whale | " + tags: "blue whale | " + tags,
    }
    noise = np.random.default_rng(3).standard_normal((2, 384)).astype(np.float32)
    for (norm, _), vector in zip(stale.items(), noise, strict=True):
        key = PromptKey(
            pk_id=pk_id("nova", norm),
            soul_id="nova",
            key_norm=norm,
            key_hash=key_hash(norm),
            key_embed=vector.tobytes(),
            updated_at_ts=1,
        )
        run(catalog.store.upsert_prompt_key(key))
    shot = run(catalog.ensure_key("nova", "selfie|paris|eiffel|happy|front"))  # no embedding
    monkeypatch.setattr(rebuild, "PAGE", 1)
    rewritten: list[str] = []
    original, flaky = catalog.rewrite_keys, {"left": 1}

    async def rewrite_keys(keys: list[tuple[str, str, list[float]]]) -> None:
        if rewritten and flaky["left"]:
            flaky["left"] -= 1
            raise StoreUnavailable("catalog away")
        await original(keys)
        rewritten.extend(pk for pk, _, _ in keys)

    monkeypatch.setattr(catalog, "rewrite_keys", rewrite_keys)
    job_id = jobs.submit(RebuildKeysJob(soul_id="nova"), client="admin")
    assert jobs.work_once()
    assert jobs.doc(job_id, "admin").status == "queued"  # the second rewrite failed: retried
    run(asyncio.sleep(0.05))
    assert jobs.work_once()
    doc = jobs.doc(job_id, "admin")
    assert doc.status == "succeeded" and doc.attempts == 2
    summary = {"keys": 3, "reembedded": 2, "renormalized": 1, "index": "exact", "index_keys": 2}
    assert doc.outcome.items[0] == {"soul_id": "nova", **summary}
    assert (doc.progress.done, doc.progress.total) == (3, 3)
    assert sorted(rewritten) == sorted(pk_id("nova", norm) for norm in stale)  # each once

    for old, new in stale.items():
        key = run(catalog.get_prompt_key(pk_id("nova", old)))  # the same id
        assert key is not None and key.key_norm == new and key.key_embed is not None
        vector = embedder.engine.embed(new.partition(" | ")[0])
        assert np.frombuffer(key.key_embed, np.float32) == pytest.approx(vector, abs=1e-5)
        found, score = run(catalog.resolve_similar("nova", new, vector))  # a cue of today
        assert found.pk_id == key.pk_id and score == pytest.approx(1.0, abs=1e-4)
    assert run(catalog.get_prompt_key(shot.pk_id)) == shot  # a shot's key is left as it is

    # The next rebuild's estimate comes from the last one's time per key, times the soul's keys.
    accepted = run(jobs.desk.submit("admin", RebuildKeysJob(soul_id="nova")))
    per_keys = run(catalog.estimate_job("rebuild_prompt_key", "nova", 3))
    assert accepted.estimated_s == per_keys["estimated_s"] and per_keys["per_item_s"] > 0


async def until(done: Any, timeout_s: float = 60) -> float:
    """Seconds until ``done()`` (awaited) holds, looked at every 10 ms."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not await done():
        assert loop.time() - start < timeout_s, "timed out"
        await asyncio.sleep(0.01)
    return loop.time() - start


def test_an_idle_leaser_waits_in_the_catalog_and_a_job_queued_elsewhere_starts_at_once(
    world: World,
) -> None:
    """Idle, the replica's one leaser makes one lease call per ``lease_wait_s`` (it waits in the
    catalog: no polling); a job queued through another catalog replica starts at once, not when
    the call's wait ends; a stopping replica drops its waiting call at once."""
    jobs = Jobs(world, world.replica(), lease_wait_s=10)
    elsewhere = world.replica().catalog  # its own store and feed, the same catalog file
    runner = jobs.worker

    async def main() -> tuple[int, float, float, str]:
        leaser = asyncio.create_task(runner.run())
        await asyncio.sleep(1.5)
        idle_leases = jobs.catalog.calls["lease_job"]
        spec = image().model_dump(mode="json")
        job_id = (await elsewhere.submit_job("c1", spec, 1, 3, 10, 10)).doc.job_id

        async def started() -> bool:
            return (await jobs.desk.job("c1", job_id)).status != "queued"

        waited_s = await until(started)
        await until(lambda: _finished(jobs, job_id))
        await asyncio.sleep(0.3)  # the leaser waits in the catalog again
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        runner.stop()
        await asyncio.wait_for(leaser, 30)
        return idle_leases, waited_s, loop.time() - t0, job_id

    idle_leases, waited_s, stop_s, job_id = run(main())
    assert idle_leases == 1  # a poll every 0.5 s would have made 3
    assert waited_s < 3  # the waiting call had 8.5 s left
    assert stop_s < 3  # not the rest of a 10 s wait
    assert jobs.doc(job_id).status == "succeeded"


async def _finished(jobs: Jobs, job_id: str, client: str = "c1") -> bool:
    return (await jobs.desk.job(client, job_id)).finished


def test_every_slot_gets_work_when_jobs_queue_and_no_more(world: World) -> None:
    gate = Gate(world.renderer)
    jobs = Jobs(world, world.replica(renderer=gate), slots=2, lease_wait_s=0.1)
    runner = jobs.worker
    job_ids = [jobs.submit(image(cue=cue)) for cue in ("a red fox", "a blue whale", "an owl")]

    async def main() -> list[str]:
        leaser = asyncio.create_task(runner.run())

        async def both_slots_busy() -> bool:
            return len(runner.held) == 2

        await until(both_slots_busy)
        await asyncio.sleep(0.3)  # the leaser could lease more if it would
        statuses = [(await jobs.desk.job("c1", job_id)).status for job_id in job_ids]
        gate.open.set()
        for job_id in job_ids:
            await until(lambda job_id=job_id: _finished(jobs, job_id))
        runner.stop()
        await asyncio.wait_for(leaser, 30)
        return statuses

    statuses = run(main())
    assert sorted(statuses) == ["queued", "running", "running"]
    assert [jobs.doc(job_id).status for job_id in job_ids] == ["succeeded"] * 3


def test_a_refill_behind_a_users_job_starts_as_soon_as_that_job_frees_its_slot(
    world: World,
) -> None:
    """A refill never takes a replica's last free slot, so the leaser's call leaves refills
    out while a user's job holds the other one; when that job ends, the call is made again
    with them at once, not when its ``lease_wait_s`` is out."""
    gate = Gate(world.renderer)
    jobs = Jobs(world, world.replica(renderer=gate), slots=2, lease_wait_s=10)
    elsewhere = world.replica().catalog
    runner = jobs.worker
    user_job = jobs.submit(image())

    async def main() -> tuple[str, float]:
        leaser = asyncio.create_task(runner.run())

        async def one_slot_busy() -> bool:
            return len(runner.held) == 1

        await until(one_slot_busy)
        spec = image(cue="a blue whale", user="u2").model_dump(mode="json")
        submitted = await elsewhere.submit_job(RESERVE_CLIENT, spec, 1, 3, 10, 10, RESERVE_LANE)
        refill = submitted.doc.job_id
        await asyncio.sleep(0.5)  # the leaser could lease the refill if it would
        waiting = (await jobs.desk.job(RESERVE_CLIENT, refill)).status
        gate.open.set()
        await until(lambda: _finished(jobs, user_job))

        async def refill_started() -> bool:
            return (await jobs.desk.job(RESERVE_CLIENT, refill)).status != "queued"

        waited_s = await until(refill_started)
        await until(lambda: _finished(jobs, refill, RESERVE_CLIENT))
        runner.stop()
        await asyncio.wait_for(leaser, 30)
        return waiting, waited_s

    waiting, waited_s = run(main())
    assert waiting == "queued"  # the replica's last free slot was kept for a user's job
    assert waited_s < 3  # the call without refills had most of its 10 s left


def test_a_quiet_job_is_not_read_again_until_it_changes(world: World) -> None:
    jobs = Jobs(world, world.replica())
    job_id = jobs.submit(image())  # queued: nobody works on it

    async def main() -> tuple[list[str], list[str], int]:
        frames: list[str] = []

        async def listen() -> None:
            async for frame in jobs.desk.events("c1", job_id):
                frames.append(frame)

        listening = asyncio.create_task(listen())
        await asyncio.sleep(1.0)
        quiet, reads = list(frames), jobs.catalog.calls["get_job"]
        await jobs.desk.cancel("c1", job_id)  # a change: the stream tells it and ends
        await asyncio.wait_for(listening, 10)
        return quiet, frames, reads

    quiet, frames, reads = run(main())
    assert [f.split("\n")[0] for f in quiet] == ["event: status"]  # nothing while unchanged
    assert frames[-1].startswith("event: done")
    assert reads == 1  # the stream's first read, and none while the job sat still


def test_an_idle_leaser_leases_a_retry_when_it_is_due(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = world.replica()
    jobs = Jobs(world, replica, lease_wait_s=10)
    jobs.config.backoff_s = 0.2  # the runner's config: a retry 0.1-0.2 s after the failure
    runner, original, flaky = jobs.worker, replica.catalog.claim_unseen, {"left": 1}

    async def claim_unseen(*args: Any) -> Any:
        if flaky["left"]:
            flaky["left"] -= 1
            raise StoreUnavailable("catalog away")
        return await original(*args)

    monkeypatch.setattr(replica.catalog, "claim_unseen", claim_unseen)
    job_id = jobs.submit(image())

    async def main() -> float:
        leaser = asyncio.create_task(runner.run())

        async def second_attempt() -> bool:
            return (await jobs.desk.job("c1", job_id)).attempts == 2

        # The first attempt fails at once; its retry is due 0.1-0.2 s later. The leaser's other
        # slot waits in the catalog meanwhile: the retry's release wakes it, too early, and it
        # waits on for the retry's due moment, not for the rest of its 10 s.
        waited_s = await until(second_attempt)
        await until(lambda: _finished(jobs, job_id))
        runner.stop()
        await asyncio.wait_for(leaser, 30)
        return waited_s

    waited_s = run(main())
    assert waited_s < 5  # its delay is 0.1-0.2 s; the idle lease's wait was up to 10 s
    # Made by its second attempt: not by a third, once a second lease, left behind by a call
    # the leaser dropped as the first attempt's slot was set free, ran out.
    assert (jobs.doc(job_id).status, jobs.doc(job_id).attempts) == ("succeeded", 2)


class Answered:
    """A lease call the catalog has answered, its answer on the way: too late to cancel."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def cancel(self) -> None:
        pass  # as a Serve response does once its request has run to completion

    def __await__(self) -> Any:
        return self.answer.__await__()


def test_a_job_leased_as_the_leaser_dropped_the_call_is_worked_on(world: World) -> None:
    """A slot is set free while a lease call is on its way back with a job: the leaser drops
    the call (it was made without refills) but works on the job it brings, instead of leaving
    it leased to no one until its lease runs out (30 s) and a second attempt starts."""
    jobs = Jobs(world, world.replica(), slots=1, lease_wait_s=10)
    runner, lease_job = jobs.worker, jobs.catalog.lease_job
    job_id = jobs.submit(image())

    async def late_answer(owner: str, lease_ms: int, *args: Any) -> Any:
        leased = await lease_job.remote(owner, lease_ms, False, 0, LEASE_LOOKUPS)
        await asyncio.sleep(0.3)  # on its way back; the slot is set free meanwhile
        return leased

    calls = iter([lambda *args: Answered(late_answer(*args))])
    jobs.catalog.lease_job = SimpleNamespace(remote=lambda *a: next(calls, lease_job.remote)(*a))

    async def main() -> None:
        leaser = asyncio.create_task(runner.run())
        await asyncio.sleep(0.1)
        runner.freed.set()  # as a slot's end sets it
        await until(lambda: _finished(jobs, job_id))
        runner.stop()
        await asyncio.wait_for(leaser, 30)

    run(main())
    assert (jobs.doc(job_id).status, jobs.doc(job_id).attempts) == ("succeeded", 1)


def _names_kind(node: ast.expr) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "kind") or (
        isinstance(node, ast.Name) and node.id == "kind"
    )


def test_job_kinds_are_told_apart_only_by_their_registry() -> None:
    """A new kind is one module of jobs/kinds/ and one line in KINDS: nowhere else compares a
    job's kind with a kind's name or tests a spec's class."""
    specs = {kind.spec.__name__ for kind in KINDS.values()}
    root = Path(__file__).resolve().parents[2]
    for path in [*(root / "serve_app").rglob("*.py"), *(root / "deployments").glob("*.py")]:
        relative = path.relative_to(root).as_posix()
        if relative.startswith("serve_app/jobs/kinds/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                operands = [node.left, *node.comparators]
                named = {o.value for o in operands if isinstance(o, ast.Constant)} & set(KINDS)
                assert not (named and any(map(_names_kind, operands))), f"{relative}:{node.lineno}"
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance":
                classes = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                assert not classes & specs, f"{relative}:{node.lineno} tests a spec's class"
    for name, kind in KINDS.items():
        assert kind.name == name and kind.spec.model_fields["kind"].annotation == Literal[name]
