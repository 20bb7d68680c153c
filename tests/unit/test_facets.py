"""Each catalog facet alone over a real store, on both backends: a facet needs only the shared
state (store, objects, config, key indexes, ledger), never another facet it does not extend."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from deployments.catalog import CatalogConfig
from serve_app.catalog.costs import Costs
from serve_app.catalog.demand import DemandCounters
from serve_app.catalog.facet import Facet
from serve_app.catalog.jobs import Jobs
from serve_app.catalog.key_index import SoulIndexes
from serve_app.catalog.keys import PromptKeys
from serve_app.catalog.ledger import Ledger, utc_day
from serve_app.catalog.locks import WorkLocks
from serve_app.catalog.replays import ReplayRecords
from serve_app.catalog.reserve import Reserve
from serve_app.catalog.shots import Shots
from serve_app.catalog.souls import SoulStyles, load_souls
from serve_app.catalog.sweeper import Sweeping
from serve_app.catalog.variants import Variants
from serve_app.errors import Gone
from serve_app.ids import new_ulid, now_ms
from serve_app.jobs.book import Outcome
from serve_app.prompts import pk_id
from serve_app.schemas import Variant, VariantCost
from serve_app.storage import open_store
from serve_app.storage.sqlite import SQLiteStore
from serve_app.storage.tables import CatalogStore
from tests.support import run, temporary_database

F = TypeVar("F", bound=Facet)
TABLES = (
    "soul, soul_style_profile, prompt_key, prompt_key_log, variant, user_seen, landmark_log, "
    "work_lock, idempotency, job, job_queue, key_demand, identity_version"
    ", project, asset, asset_version, project_event, script, scene, frame, frame_version"
    ", project, asset, asset_version, project_event"
    ", asset_image_embed, asset_derived_image, job_slot"
)
KEY = pk_id("nova", "a fox")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CatalogStore]:
    if request.param == "sqlite":
        s: CatalogStore = SQLiteStore(tmp_path / "catalog.db")
        run(s.open())
    else:
        s = open_store(request.getfixturevalue("postgres_url"))
        run(s.open())
        run(s._write(f"TRUNCATE {TABLES}"))
    run(alone(SoulStyles, s).seed_souls(load_souls("config/souls.yaml")))
    yield s
    run(s.close())


def alone(facet: type[F], store: CatalogStore, **config: Any) -> F:
    """One facet over the store, with the shared state the Catalog engine would give it."""
    made = facet()
    made.store, made.objects, made.config = store, None, CatalogConfig(**config)
    made.indexes = SoulIndexes(store, None, made.config.embedding_dim, made.config.index)
    made.ledger = Ledger(made.config.cost)
    made.demand = DemandCounters(made.config.reserve.half_life_s)
    return made


def variant(pk: str = KEY, cost: VariantCost | None = None) -> Variant:
    vid = new_ulid()
    return Variant(
        variant_id=vid, pk_id=pk, soul_id="nova", asset_url="", storage_key=vid, cost=cost
    )


def vector(angle_deg: float) -> list[float]:
    v = np.zeros(384, dtype=np.float32)
    v[0], v[1] = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return v.tolist()


def test_souls_seed_once_and_keep_a_changed_style(store: CatalogStore) -> None:
    souls = alone(SoulStyles, store)
    style = run(souls.get_style("nova"))
    assert style is not None
    changed = run(souls.put_style(style.model_copy(update={"negatives": ["blur"]})))
    assert changed is not None and changed.negatives == ["blur"]
    run(souls.seed_souls(load_souls("config/souls.yaml")))
    assert run(souls.get_style("nova")) == changed
    assert run(souls.put_style(style.model_copy(update={"soul_id": "nobody"}))) is None
    assert run(souls.delete_style("nova")) is True
    assert run(souls.get_style("nova")) is None
    assert {s.soul_id for s in run(souls.list_styles())} == {"valentina"}


def test_keys_reuse_a_near_key_and_create_a_far_one(store: CatalogStore) -> None:
    keys = alone(PromptKeys, store, similarity_threshold=0.9)
    first, _ = run(keys.resolve_similar("nova", "a red fox", vector(0)))
    near, score = run(keys.resolve_similar("nova", "a red fox running", vector(10)))
    assert near.pk_id == first.pk_id and score is not None and score > 0.9
    far, _ = run(keys.resolve_similar("nova", "a red fox asleep", vector(60)))
    assert far.pk_id != first.pk_id
    assert run(keys.count_prompt_keys("nova")) == 2
    assert run(keys.lookup("nobody", "a fox")) is None
    exact = run(keys.ensure_key("nova", "plain"))
    assert run(keys.ensure_key("nova", "plain")) == exact and exact.key_embed is None


def test_claims_give_each_user_every_variant_once_oldest_first(store: CatalogStore) -> None:
    variants = alone(Variants, store)
    made = [variant() for _ in range(2)]
    for v in made:
        assert run(variants.put_variant(v, [])) == []
    claims = [run(variants.claim_unseen(KEY, "u1")) for _ in range(3)]
    assert [c.variant_id if c else None for c in claims] == [v.variant_id for v in made] + [None]
    assert run(variants.users_lacking_unseen(KEY, ["u1", "u2"])) == ["u1"]
    page, cursor = run(variants.seen_page("u1", "", 10))
    assert [v.variant_id for v, _ in page] == [v.variant_id for v in reversed(made)]
    assert cursor is None


def test_variants_claim_when_written_and_a_deleted_one_is_gone(store: CatalogStore) -> None:
    variants = alone(Variants, store)
    v = variant()
    assert run(variants.put_variant(v, ["u1"], via={"u1": "c/j/0"})) == ["u1"]
    assert run(variants.claimed_via("u1", "c/j/0")) == run(variants.find_variant(v.variant_id))
    run(variants.delete_variant(v.variant_id))
    with pytest.raises(Gone):
        run(variants.find_variant(v.variant_id))
    assert run(variants.claimed_via("u1", "c/j/0")) is None
    assert run(variants.claim_unseen(KEY, "u2")) is None


def test_costs_sum_what_variants_were_priced(store: CatalogStore) -> None:
    run(alone(Variants, store).put_variant(variant(cost=VariantCost(render_s=10.0)), []))
    costs = alone(Costs, store, cost={"daily_budget_usd": 1.0})
    today = utc_day(now_ms())
    report = run(costs.cost_report(today, today))
    assert [(d.soul_id, d.variants, d.render_s) for d in report.days] == [("nova", 1, 10.0)]
    assert report.usd == report.today_usd > 0
    assert report.budget_used == round(report.today_usd, 4)


def test_shots_of_one_user_differ_until_every_landmark_was_used(store: CatalogStore) -> None:
    shots = alone(Shots, store)
    landmarks = ["eiffel", "louvre", "seine"]
    taken = [run(shots.choose_shot("nova", "paris", "u1", landmarks, ["wide"])) for _ in range(3)]
    assert sorted(shot[0] for shot in taken if shot) == landmarks


def test_locks_are_taken_over_from_a_dead_replica(store: CatalogStore) -> None:
    locks = alone(WorkLocks, store)
    run(locks.replica_alive("r1", 60_000))
    assert run(locks.try_lock("key:a", "r1/x", 60_000)) is True
    assert run(locks.try_lock("key:a", "r2/y", 60_000)) is False
    run(store.unlock("replica:r1", "r1"))  # r1 died
    assert run(locks.try_lock("key:a", "r2/y", 60_000)) is True
    run(locks.worker_alive("w1", 60_000))
    assert run(store.live_locks("worker:", now_ms())) == ["w1"]
    run(locks.worker_gone("w1"))
    assert run(store.live_locks("worker:", now_ms())) == []


def test_replays_start_once_then_replay_the_result(store: CatalogStore) -> None:
    replays = alone(ReplayRecords, store)
    started = run(replays.begin_request("k1", "f1", 60_000))
    assert started.outcome == "started"
    assert run(replays.begin_request("k1", "f1", 60_000)).outcome == "in_flight"
    assert run(replays.begin_request("k1", "other", 60_000)).outcome == "mismatch"
    run(replays.finish_request("k1", "f1", started.version, {"ok": 1}, 60_000))
    replay = run(replays.begin_request("k1", "f1", 60_000))
    assert (replay.outcome, replay.result) == ("replay", {"ok": 1})
    run(replays.abandon_request("k1", replay.version))
    assert run(replays.begin_request("k1", "f1", 60_000)).outcome == "started"


def test_jobs_run_through_their_lease_and_count_in_the_stats(store: CatalogStore) -> None:
    jobs = alone(Jobs, store)
    spec = {"kind": "image", "soul_id": "nova", "cue": "a fox", "user_id": "u1"}
    submitted = run(jobs.submit_job("c1", spec, 1, 3, 10, 10))
    assert submitted.doc is not None and submitted.position == 0
    leased = run(jobs.lease_job("w1", 60_000))
    assert leased is not None and leased.doc.status == "running"
    done = Outcome(items=[{"variant_id": "v"}])
    assert run(jobs.finish_job(leased.lease, "succeeded", done, None)) is True
    run(jobs.conclude_job(leased.lease))
    assert run(jobs.job_backlog()) == {"queued_jobs": 0.0, "running_jobs": 0.0}
    assert run(jobs.job_stats())["finished_in_window"] == 1
    assert run(jobs.estimate_job("image", "nova", 2))["estimated_s"] is not None


def test_the_sweeping_facet_sweeps_expired_locks_each_round(store: CatalogStore) -> None:
    sweeping = alone(Sweeping, store, sweep_every_s=0.05)
    run(store.try_lock("key:a", "r1/x", now_ms() - 10, 1))

    async def until_swept() -> None:
        task = asyncio.create_task(sweeping._sweep_forever())
        for _ in range(100):
            await asyncio.sleep(0.02)
            if await store.get_lock("key:a") is None:
                break
        await asyncio.sleep(0.02)  # the round ends; cancel it while it sleeps, not mid-query
        task.cancel()

    run(until_swept())
    assert run(store.get_lock("key:a")) is None


def test_a_cost_report_adds_up_however_its_days_and_souls_round(store: CatalogStore) -> None:
    prices = {"usd_per_second": {"Renderer": 0.0000004}}  # 0.5 micro-dollars a variant
    variants = alone(Variants, store, cost=prices)
    for soul in ("nova", "valentina", "iris"):
        made = variant(cost=VariantCost(render_s=1.25)).model_copy(update={"soul_id": soul})
        run(variants.put_variant(made, []))
    today = utc_day(now_ms())
    report = run(alone(Costs, store, cost=prices).cost_report(today, today))
    assert len(report.days) == 3
    assert report.usd == report.today_usd == round(3 * 0.0000005, 6)
    tomorrow = (dt.date.fromisoformat(today) + dt.timedelta(days=1)).isoformat()
    later = run(alone(Costs, store, cost=prices).cost_report(tomorrow, today))
    assert (later.days, later.usd, later.today_usd) == ([], 0, report.today_usd)


class Served(Variants, Reserve):
    """The reserve beside the claims it counts (as the Catalog mixes them)."""


def test_the_reserve_counts_demand_flushes_it_and_queues_one_refill_per_short_key(
    store: CatalogStore,
) -> None:
    reserve = alone(Served, store, reserve={"enabled": True, "depth": 2, "hot_per_min": 0.01})
    for _ in range(3):  # u1 is sent every variant there is, then needs one more: seen 1, 2, 3
        if run(reserve.claim_unseen(KEY, "u1")) is None:
            run(reserve.put_variant(variant(), ["u1"]))
    run(reserve.claim_unseen(pk_id("nova", "a cat"), "u2"))  # a key with no variant: seen 1
    assert run(reserve.flush_demand()) == 2
    assert run(reserve.flush_demand()) == 0  # nothing counted since: nothing written
    hot = {d.pk_id: d for d in run(reserve.hot_keys())}
    assert round(hot[KEY].top_seen) == 3 and hot[KEY].per_min > 0
    assert run(reserve.reserve_short(KEY)) == 2  # 3 variants, u1 had 3: depth 2 ahead
    assert sorted(run(reserve.plan_reserve())) == sorted([KEY, pk_id("nova", "a cat")])
    assert run(reserve.plan_reserve()) == []  # one refill per key queued at a time
    leased = run(reserve.lease_job("w1", 60_000))
    assert leased is not None and leased.doc.kind == "reserve" and leased.lease.lane == 2
    assert run(reserve.lease_job("w2", 60_000)) is None  # max_running: 1 refill at once
    assert run(reserve.lease_job("w2", 60_000, False)) is None


def test_the_reserve_stops_at_the_budget_warning_and_when_turned_off(store: CatalogStore) -> None:
    budget = {"daily_budget_usd": 1.0, "warn_at": 0.5}
    reserve = alone(Served, store, cost=budget, reserve={"enabled": True, "hot_per_min": 0.01})
    run(reserve.claim_unseen(KEY, "u1"))
    run(reserve.flush_demand())
    assert run(reserve.reserve_short(KEY)) == 3  # no variant yet; u1 will have had 1
    spent = VariantCost(render_s=0.6 / 0.000236, animate_s=0, encode_s=0)  # $0.60 of $1
    run(reserve.put_variant(variant(cost=spent), []))
    assert run(reserve.reserve_short(KEY)) == 0
    assert run(reserve.plan_reserve()) == []
    off = alone(Reserve, store, reserve={"enabled": False, "hot_per_min": 0.01})
    assert run(off.reserve_short(KEY)) == 0 and run(off.plan_reserve()) == []
