"""The reserve over the real engines, without Ray: a hot key is refilled to its depth and no
further, its refills are delivered once per user like any other variant, the budget stops
them, two workers never take a key past its depth, and a user's render preempts a refill at
its next denoising step."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from deployments.catalog import CatalogConfig
from deployments.renderer import RendererConfig, RendererEngine
from serve_app.diffusion.lanes import RenderLanes
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_MODEL
from serve_app.errors import Preempted
from serve_app.jobs.book import JobDoc
from serve_app.jobs.runner import JobRunner, JobWorkerConfig
from serve_app.jobs.spec import RESERVE_CLIENT, RESERVE_LANE
from serve_app.prompts import normalize, pk_id
from serve_app.schemas import Frames, RenderJob
from tests.support import run
from tests.unit.handles import LocalHandle
from tests.unit.world import Replica, World

CUE = "a red fox"


def reserve_on(replica: Replica, **reserve: Any) -> None:
    config = {"enabled": True, "depth": 2, "hot_per_min": 0.01, "max_running": 2, **reserve}
    replica.catalog.configure(CatalogConfig(reserve=config))


def key_of(replica: Replica, cue: str = CUE) -> str:
    style = run(replica.catalog.get_style("nova"))
    assert style is not None
    return pk_id("nova", normalize(cue, style.style_tags)[0])


def worker(replica: Replica) -> JobRunner:
    async def publish(doc: JobDoc) -> None:
        raise AssertionError("a refill has no webhook")

    catalog = LocalHandle(replica.catalog)
    return JobRunner(replica.deliverer, catalog, publish, {}, JobWorkerConfig(slots=4))


def refill_until_full(replica: Replica) -> int:
    """Flush, plan and work refills until the plan queues none; the refills that ran."""
    runner, ran = worker(replica), 0
    while True:
        run(replica.catalog.flush_demand())
        if not run(replica.catalog.plan_reserve()):
            return ran
        while (leased := run(replica.catalog.lease_job(runner.owner, 60_000))) is not None:
            run(runner.work(leased))
            ran += 1


def refills(world: World) -> int:
    rows = world.rows("SELECT meta_json FROM variant WHERE meta_json LIKE '%\"reserve\": true%'")
    return len(rows)


def test_a_hot_key_is_refilled_to_its_depth_and_its_refills_go_once_to_each_user(
    world: World,
) -> None:
    replica = world.replica()
    reserve_on(replica)
    assert [replica.image(CUE, "u1").cache for _ in range(2)] == ["miss", "miss"]
    assert refill_until_full(replica) == 2  # u1 had 2 of 2: two more make depth 2
    assert len(world.variant_ids()) == 4 and refills(world) == 2
    assert refill_until_full(replica) == 0  # full: nothing more is queued or made
    assert replica.renders == 4
    sent = [replica.image(CUE, "u1") for _ in range(2)]  # u1's next two are hits now
    assert [d.cache for d in sent] == ["hit", "hit"]
    assert all(d.variant.meta.get("reserve") for d in sent)
    others = [replica.image(CUE, "u2").variant.variant_id for _ in range(4)]
    assert len(set(others)) == 4 == len(world.seen("u2"))  # every variant once, refills too
    assert world.seen("u1") == world.variant_ids()


def test_the_budget_stops_a_queued_refill_before_it_renders(world: World) -> None:
    replica = world.replica()
    reserve_on(replica)
    replica.image(CUE, "u1")
    run(replica.catalog.flush_demand())
    assert run(replica.catalog.plan_reserve()) == [key_of(replica)]
    # Today's spend (the miss) is now past the warning level of a tiny budget.
    replica.catalog.configure(
        CatalogConfig(
            reserve=replica.catalog.config.reserve,
            cost={"daily_budget_usd": 1e-9, "warn_at": 0.5},
        )
    )
    runner = worker(replica)
    leased = run(replica.catalog.lease_job(runner.owner, 60_000))
    assert leased is not None and leased.doc.kind == "reserve"
    run(runner.work(leased))
    doc = run(replica.catalog.get_job(RESERVE_CLIENT, leased.doc.job_id))
    assert doc is not None and doc.status == "succeeded" and doc.outcome.items == [None]
    assert replica.renders == 1 and refills(world) == 0
    assert run(replica.catalog.plan_reserve()) == []


def test_two_workers_never_refill_a_key_past_its_depth(world: World) -> None:
    first, second = world.replica(), world.replica()
    for replica in (first, second):
        reserve_on(replica, depth=1)
    first.image(CUE, "u1")  # u1 had 1 of 1: one refill makes depth 1
    run(first.catalog.flush_demand())
    pk = key_of(first)
    spec = {"kind": "reserve", "soul_id": "nova", "pk_id": pk}
    for _ in range(2):  # two refills of one key, as two planners racing could queue them
        run(first.catalog.submit_job(RESERVE_CLIENT, spec, 1, 1, 10, 10, RESERVE_LANE))
    runners = [worker(first), worker(second)]
    leases = [run(r.deliverer.catalog.lease_job.remote(r.owner, 60_000)) for r in runners]
    assert all(leased is not None for leased in leases)

    async def both() -> None:
        await asyncio.gather(*(r.work(leased) for r, leased in zip(runners, leases, strict=True)))

    run(both())
    assert len(world.variant_ids()) == 2 and refills(world) == 1


def test_a_users_render_preempts_a_refill_at_its_next_denoising_step(models_dir: Path) -> None:
    engine = RendererEngine(ModelManager(models_dir), RendererConfig(steps=6, width=64, height=64))
    lanes = RenderLanes()
    common = {"style_id": "s", "base_model_ref": TINY_MODEL, "negative_prompt": "", "seed": 1}
    refill = RenderJob(prompt="a fox", background=True, **common)
    user = RenderJob(prompt="a cat", **common)
    steps: list[int] = []

    def on_step(step: int, total: int) -> None:
        steps.append(step)
        if step == 2:
            lanes.arrived(user)  # a user's render arrives at the replica mid-refill

    never = threading.Event()
    (outcome,) = lanes.run(engine.render_batch, [refill], on_step, never)
    # The arrival came at the end of step 2: no step of the 6 ran after it.
    assert isinstance(outcome, Preempted) and steps == [1, 2]
    # While the user's render is in the replica, a refill gives way before its first step.
    (waiting,) = lanes.run(engine.render_batch, [refill], on_step, never)
    assert isinstance(waiting, Preempted) and steps == [1, 2]
    (mine,) = lanes.run(engine.render_batch, [user], None, never)
    assert isinstance(mine, Frames)
    lanes.left(user)
    lanes.arrived(refill)  # a refill arriving preempts nothing
    (again,) = lanes.run(engine.render_batch, [refill], None, never)
    assert isinstance(again, Frames)
