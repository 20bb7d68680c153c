"""The Deliverer without Ray, over the real engines: the catalog on SQLite, the tiny Renderer and
Animator, Dedupe, and the Transcoder on a local object store, behind plain handle stand-ins."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from deployments.dedupe import DedupeConfig, DedupeEngine
from deployments.renderer import RendererEngine
from serve_app.catalog.ledger import CostConfig, utc_day
from serve_app.characters.verdicts import IdentityJudging
from serve_app.delivery import Delivery, Place, UnknownCity
from serve_app.delivery.coalesce import WorkInterrupted
from serve_app.delivery.order import Answer, Judgement, Order, Render
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_CLIP
from serve_app.errors import Busy, Conflict, Gone, InvalidRequest, NotFound, UnusableStyle
from serve_app.ids import new_ulid, now_ms
from serve_app.prompts import pk_id
from serve_app.schemas import DedupeVerdict, Fingerprint, Frames, Regeneration, RenderJob
from serve_app.storage.store import StoreUnavailable
from tests.support import run
from tests.unit.world import Gate, Replica, World


async def key_of(replica: Replica, cue: str) -> str:
    lookup = await replica.catalog.lookup("nova", cue)
    assert lookup is not None
    return pk_id("nova", lookup.key_norm)


async def until(condition: Callable[[], bool], timeout_s: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never held"
        await asyncio.sleep(0.02)


def test_a_miss_then_a_hit_for_another_user_then_a_new_variant_for_the_first(world: World) -> None:
    replica = world.replica()
    first = replica.image("penguin", "a")
    other = replica.image("a penguin!", "b")  # the same normalized key
    again = replica.image("penguin", "a")
    assert (first.cache, other.cache, again.cache) == ("miss", "hit", "miss")
    assert other.variant.variant_id == first.variant.variant_id
    assert again.variant.variant_id != first.variant.variant_id
    assert replica.renders == 2
    assert world.seen("a") == {first.variant.variant_id, again.variant.variant_id}
    assert world.object_variant_ids() == world.variant_ids()


def test_a_failed_catalog_write_leaves_the_objects_to_the_sweeper(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve_app.catalog.sweeper import Sweeper

    replica = world.replica()

    async def refuse(*args: Any) -> list[str]:
        raise StoreUnavailable("SQLite: disk I/O error")

    monkeypatch.setattr(replica.catalog, "put_variant", refuse)
    with pytest.raises(StoreUnavailable):
        replica.image("penguin", "a")
    assert replica.renders == 1  # it got as far as encoding
    assert world.variant_ids() == set() and world.seen("a") == set()
    assert run(Sweeper(replica.catalog.store, world.objects, grace_s=0).sweep())["objects"] > 0
    assert world.objects.list("soul/") == []


def test_a_record_whose_answer_died_with_the_catalog_replica_keeps_the_variants_objects(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Catalog replica wrote the row and died before answering (SIGKILL under load): the
    delivery renders once more, and the recorded variant keeps its GIF."""
    from ray.exceptions import ActorDiedError

    replica = world.replica()
    put_variant = replica.catalog.put_variant
    answers_lost = iter([True])

    async def write_then_die(*args: Any) -> list[str]:
        claimed = await put_variant(*args)
        if next(answers_lost, False):
            raise ActorDiedError()
        return claimed

    monkeypatch.setattr(replica.catalog, "put_variant", write_then_die)
    delivered = replica.image("penguin", "a")
    assert replica.renders == 2 and len(world.variant_ids()) == 2
    assert world.object_variant_ids() == world.variant_ids()  # before: the first lost its GIF
    assert delivered.variant.variant_id in world.seen("a")


def test_an_encode_cancelled_after_its_writes_leaves_no_objects_and_a_503(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = world.replica()
    encode = replica.transcoder.encode

    def encode_then_cancelled(*args: Any) -> Any:
        encode(*args)  # every object written ...
        raise asyncio.CancelledError  # ... and then the call is cancelled

    monkeypatch.setattr(replica.transcoder, "encode", encode_then_cancelled)
    with pytest.raises(WorkInterrupted) as caught:
        replica.image("penguin", "a")
    assert caught.value.status_code == 503
    assert world.objects.list("soul/") == []
    assert world.variant_ids() == set()


def test_a_key_locked_by_another_replica_past_the_wait_is_busy(world: World) -> None:
    replica = world.replica(lock_wait_s=0.3, lock_poll_s=0.05)
    lock = f"render:{run(key_of(replica, 'penguin'))}"
    run(replica.catalog.try_lock(lock, "elsewhere", 60_000))
    with pytest.raises(Busy) as caught:
        replica.image("penguin", "a")
    assert caught.value.retry_after_s == 5 and "another replica" in str(caught.value)
    assert replica.renders == 0 and world.variant_ids() == set()


def test_the_render_lock_is_renewed_while_a_render_outlasts_its_ttl(world: World) -> None:
    gate = Gate(world.renderer)
    replica = world.replica(renderer=gate, lock_ttl_s=0.3)

    async def test() -> Delivery:
        delivery = asyncio.create_task(replica.deliverer.image("nova", "penguin", "a"))
        await until(gate.entered.is_set)
        await asyncio.sleep(1.0)  # over three TTLs
        lock = f"render:{await key_of(replica, 'penguin')}"
        assert not await replica.catalog.try_lock(lock, "intruder", 1000)
        gate.open.set()
        result = await delivery
        assert await replica.catalog.try_lock(lock, "intruder", 1000)  # released after
        return result

    assert run(test()).cache == "miss"


def test_the_replica_says_it_lives_only_while_it_holds_a_lock(world: World) -> None:
    """Issue 28: the heartbeat went on forever after the first lock, a catalog call every
    third of replica_ttl_s from an idle replica."""
    gate = Gate(world.renderer)
    replica = world.replica(renderer=gate, replica_ttl_s=0.3)  # a beat every 0.1 s
    calls = replica.handles.catalog.calls

    async def test() -> None:
        assert calls["replica_alive"] == 0  # no lock yet: not a word
        delivery = asyncio.create_task(replica.deliverer.image("nova", "penguin", "a"))
        await until(gate.entered.is_set)
        held = calls["replica_alive"]
        await asyncio.sleep(0.5)
        assert calls["replica_alive"] >= held + 2  # it beats while the render holds its lock
        gate.open.set()
        await delivery
        released = calls["replica_alive"]
        await asyncio.sleep(0.5)  # five beats' time
        assert calls["replica_alive"] == released and not replica.deliverer.locks.beating
        again = await replica.deliverer.image("nova", "penguin", "a")  # a miss: a lock again
        assert again.cache == "miss" and calls["replica_alive"] > released
        await asyncio.sleep(0.3)
        assert not replica.deliverer.locks.beating

    run(test())


class Recording(DedupeEngine):
    def __init__(self, config: DedupeConfig, manager: ModelManager | None = None) -> None:
        super().__init__(config, manager)
        self.verdicts: list[DedupeVerdict] = []

    def check(
        self, frames: Frames, known: list[Fingerprint], identity: IdentityJudging | None = None
    ) -> DedupeVerdict:
        verdict = super().check(frames, known, identity)
        self.verdicts.append(verdict)
        return verdict


def test_dedupe_keeps_the_most_distinct_of_its_attempts(world: World) -> None:
    dedupe = Recording(DedupeConfig(threshold=64))  # every render is "too close" to a sibling
    replica = world.replica(dedupe=dedupe, dedupe_attempts=3)
    replica.image("penguin", "a")
    assert replica.renders == 1  # no siblings yet: the first render stands
    dedupe.verdicts.clear()
    second = replica.image("penguin", "a")
    assert replica.renders == 1 + 3 and len(dedupe.verdicts) == 3
    assert all(v.duplicate for v in dedupe.verdicts)
    best = max(v.min_distance or 0 for v in dedupe.verdicts)
    assert second.variant.meta["dedupe_min_distance"] == best
    assert second.variant.phash in {v.phash for v in dedupe.verdicts if v.min_distance == best}


class Scripted:
    """A check that answers as it is told, one answer a render."""

    def __init__(self, *answers: Answer) -> None:
        self.answers, self.seeds = list(answers), list[int]()

    async def judge(
        self, render: Render, order: Order, earlier: tuple[Judgement, ...]
    ) -> Judgement:
        self.seeds.append(render.seed)
        return Judgement(self.answers.pop(0), (float(len(self.seeds)),))


def test_a_check_added_to_the_list_judges_every_new_render(world: World) -> None:
    """The identity check is one more entry in the list: "again" gets a new seed, "keep best"
    ends the attempts."""
    replica = world.replica(dedupe_attempts=3)
    again_then_pass = Scripted(Answer.AGAIN, Answer.PASS)
    replica.deliverer.maker.checks.append(again_then_pass)
    made = replica.image("penguin", "a").variant
    assert replica.renders == 2 and made.seed == again_then_pass.seeds[1]

    replica.deliverer.maker.checks[-1] = Scripted(Answer.KEEP_BEST)
    assert replica.image("penguin", "a").cache == "miss" and replica.renders == 3


def test_a_variants_image_embedding_is_kept_and_judges_its_keys_next_renders(
    world: World, models_dir: Path
) -> None:
    clip = DedupeConfig(threshold=0, clip_model=TINY_CLIP, clip_distance=2.0)  # CLIP alone
    dedupe = Recording(clip, ModelManager(models_dir))  # and every picture is "the same"
    replica = world.replica(dedupe=dedupe, dedupe_attempts=2)
    first = replica.image("penguin", "a").variant
    [(stored,)] = world.rows(
        "SELECT image_embed FROM variant WHERE variant_id = ?", first.variant_id
    )
    assert stored == dedupe.verdicts[0].image_embed and len(stored) == 2 * 64  # float16 x 64
    assert first.meta["image_embed_model"] == TINY_CLIP
    dedupe.verdicts.clear()
    replica.image("penguin", "a")
    assert len(dedupe.verdicts) == 2  # both attempts judged against the stored embedding
    assert all(v.duplicate and v.clip_distance is not None for v in dedupe.verdicts)
    assert all(v.min_distance is not None and v.min_distance >= 0 for v in dedupe.verdicts)


def test_a_variant_costs_every_render_it_took_its_animation_and_encode(world: World) -> None:
    dedupe = Recording(DedupeConfig(threshold=64))
    replica = world.replica(dedupe=dedupe, dedupe_attempts=3)
    replica.image("penguin", "a")
    dedupe.verdicts.clear()
    second = replica.image("penguin", "a").variant  # three renders, the most distinct kept
    [(day, render_s, animate_s, encode_s, usd)] = world.rows(
        "SELECT cost_day, render_s, animate_s, encode_s, cost_usd FROM variant "
        "WHERE variant_id = ?",
        second.variant_id,
    )
    assert len(dedupe.verdicts) == 3 and all(v.render_s > 0 for v in dedupe.verdicts)
    assert render_s == pytest.approx(sum(v.render_s for v in dedupe.verdicts))
    assert render_s > second.meta["render_s"] > 0  # the kept render alone is a third of it
    assert animate_s == second.meta["animate_s"] > 0 and encode_s == second.meta["encode_s"] > 0
    prices = CostConfig().usd_per_second
    priced = (
        render_s * prices["Renderer"]
        + animate_s * prices["Animator"]
        + encode_s * prices["Transcoder"]
    )
    assert usd == pytest.approx(priced, abs=1e-9) and day == utc_day(now_ms())  # to 9 places


def test_delivery_gives_up_with_a_503_after_its_attempts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    replica = world.replica(delivery_attempts=2)

    async def always_taken(*args: Any) -> bool:  # the user's other requests win every claim
        return False

    monkeypatch.setattr(replica.catalog.store, "claim", always_taken)
    with pytest.raises(Busy) as caught:
        replica.image("penguin", "a")
    assert "too many concurrent requests" in str(caught.value)
    # Round one rendered; round two found that variant still unseen, so it only tried the claim.
    assert replica.renders == 1 and replica.handles.catalog.calls["claim_unseen"] == 1 + 2
    assert world.object_variant_ids() == world.variant_ids()  # what was made stands, whole


def test_users_who_join_a_render_while_it_runs_are_served_by_it(world: World) -> None:
    replica = world.replica()

    async def burst() -> list[Delivery]:
        users = [f"u{i}" for i in range(4)]
        return list(
            await asyncio.gather(*(replica.deliverer.image("nova", "comet", u) for u in users))
        )

    deliveries = run(burst())
    assert len({d.variant.variant_id for d in deliveries}) == 1 and replica.renders == 1
    # Each user's claim after the key lookup, and no second one: the render claimed for all.
    assert replica.handles.catalog.calls["claim_unseen"] == 4


def test_two_replicas_on_one_catalog_share_a_render_across_users(world: World) -> None:
    one, two = world.replica(), world.replica()

    async def both() -> tuple[Delivery, Delivery]:
        return await asyncio.gather(
            one.deliverer.image("nova", "penguin", "a"), two.deliverer.image("nova", "penguin", "b")
        )

    a, b = run(both())
    assert a.variant.variant_id == b.variant.variant_id  # the work_lock made one render do
    assert one.renders + two.renders == 1
    assert world.variant_ids() == world.object_variant_ids() == {a.variant.variant_id}


def test_two_replicas_never_give_one_user_the_same_variant(world: World) -> None:
    one, two = world.replica(), world.replica()

    async def both() -> tuple[Delivery, Delivery]:
        return await asyncio.gather(
            one.deliverer.image("nova", "otter", "a"), two.deliverer.image("nova", "otter", "a")
        )

    first, second = run(both())
    assert first.variant.variant_id != second.variant.variant_id
    assert world.seen("a") == {first.variant.variant_id, second.variant.variant_id}


def test_the_leader_leaving_mid_render_fails_no_one_else(world: World) -> None:
    gate = Gate(world.renderer)
    replica = world.replica(renderer=gate)

    async def test() -> list[Delivery]:
        leader = asyncio.create_task(replica.deliverer.image("nova", "penguin", "a"))
        await until(gate.entered.is_set)
        others = [
            asyncio.create_task(replica.deliverer.image("nova", "penguin", user))
            for user in ("b", "c")
        ]
        await asyncio.sleep(0.2)  # both joined the render
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        gate.open.set()
        return list(await asyncio.gather(*others))

    b, c = run(test())
    assert b.variant.variant_id == c.variant.variant_id and replica.renders == 1
    assert world.seen("a") == set()  # the one who left was not charged with the variant
    assert world.seen("b") == world.seen("c") == {b.variant.variant_id}
    assert world.object_variant_ids() == world.variant_ids()


def test_a_style_naming_a_model_the_renderer_lacks_is_a_409_that_says_to_fix_it(
    world: World,
) -> None:
    """Found by the fuzz run: such a style answered each of the soul's misses with a 422, as if
    the request were wrong; nothing is written either way."""
    replica = world.replica()
    style = run(replica.catalog.get_style("nova"))
    assert style is not None
    run(replica.catalog.put_style(style.model_copy(update={"base_model_ref": "no-such-model"})))
    with pytest.raises(UnusableStyle, match=r"'no-such-model' not found.*fix it with POST /style"):
        replica.image("penguin", "a")
    assert UnusableStyle.status_code == 409
    assert world.variant_ids() == set() and world.objects.list("soul/") == []


def test_bad_selfie_places_are_refused_before_anything_is_written(world: World) -> None:
    replica = world.replica()
    with pytest.raises(UnknownCity) as city:
        run(replica.deliverer.selfie("nova", Place("atlantis", "happy"), "a"))
    assert city.value.status_code == 404 and "paris" in str(city.value)
    with pytest.raises(InvalidRequest) as mood:
        run(replica.deliverer.selfie("nova", Place("paris", "furious"), "a"))
    assert str(mood.value).startswith("mood:")
    assert world.rows("SELECT * FROM landmark_log") == [] and replica.renders == 0


def test_a_replica_that_dies_under_a_new_variant_costs_one_more_render_not_a_500(
    world: World,
) -> None:
    from ray.exceptions import ActorDiedError

    class DiesOnce:
        """The Renderer replica dies during its first call (SIGKILL under load)."""

        def __init__(self) -> None:
            self.calls = 0

        def render(self, job: RenderJob) -> Frames:
            self.calls += 1
            if self.calls == 1:
                raise ActorDiedError()
            return world.renderer.render(job)

    renderer = DiesOnce()
    replica = world.replica(renderer=renderer)
    delivered = replica.image("penguin", "a")
    assert delivered.cache == "miss" and renderer.calls == 2
    assert world.seen("a") == {delivered.variant.variant_id} == world.variant_ids()
    assert world.object_variant_ids() == world.variant_ids()  # the dead attempt left nothing


def test_a_catalog_replica_dying_under_a_call_costs_that_call_again_not_a_503(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Catalog call is a read or an idempotent write: one whose replica died (SIGKILL
    under load, before it ran) is made once more, on another replica."""
    from ray.exceptions import ActorDiedError

    replica = world.replica()
    calls: Counter[str] = Counter()

    def dies_first(name: str) -> Callable[..., Any]:
        real = getattr(replica.catalog, name)

        async def call(*args: Any) -> Any:
            calls[name] += 1
            if calls[name] == 1:
                raise ActorDiedError()
            return await real(*args)

        return call

    for name in ("lookup", "try_lock", "put_variant"):
        monkeypatch.setattr(replica.catalog, name, dies_first(name))
    delivered = replica.image("penguin", "a")
    assert delivered.cache == "miss" and replica.renders == 1
    assert calls == {"lookup": 2, "try_lock": 2, "put_variant": 2}
    assert world.seen("a") == {delivered.variant.variant_id} == world.variant_ids()


def test_a_dead_upstream_replica_is_recognized_through_serves_wrapper() -> None:
    """A call handed a dead replica's response fails with Serve's RayServeException, caused by
    the ActorDiedError (Serve's router, _make_upstream_crash_error)."""
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import RayServeException

    from serve_app.errors import replica_died

    wrapped = RayServeException("an upstream actor died before finishing a dependent task")
    wrapped.__cause__ = ActorDiedError()
    assert replica_died(wrapped) and replica_died(ActorDiedError())
    assert not replica_died(RayServeException("something else")) and not replica_died(Busy("x"))


def test_a_variant_made_before_thumbnails_is_delivered_with_one(world: World) -> None:
    replica = world.replica()
    made = replica.image("lighthouse", "a").variant
    thumbnail = made.meta["thumbnail_key"]
    assert world.objects.exists(thumbnail)
    # as it was recorded before thumbnails: no key in its meta, no object
    world.objects.delete(thumbnail)
    meta = {k: v for k, v in made.meta.items() if k != "thumbnail_key"}
    db = sqlite3.connect(world.db)
    with db:
        db.execute("UPDATE variant SET meta_json = ?", (json.dumps(meta),))
    db.close()

    hit = replica.image("lighthouse", "b")
    assert (hit.cache, hit.variant.variant_id) == ("hit", made.variant_id)
    assert hit.variant.meta["thumbnail_key"] == thumbnail and world.objects.exists(thumbnail)
    assert replica.handles.transcoder.calls["thumbnail"] == 1


def test_a_deleted_variant_is_never_delivered_again_and_its_objects_go(world: World) -> None:
    replica = world.replica()
    made = replica.image("windmill", "a").variant
    assert world.objects.list(made.stem)
    run(replica.catalog.delete_variant(made.variant_id))

    assert world.objects.list(made.stem) == []
    after = replica.image("windmill", "b")  # the key's only variant is gone: a new one
    assert after.cache == "miss" and after.variant.variant_id != made.variant_id
    assert made.variant_id in world.seen("a")  # who had it keeps their history row
    for call in (replica.catalog.find_variant, replica.catalog.delete_variant):
        with pytest.raises(Gone, match="was deleted"):
            run(call(made.variant_id))
    with pytest.raises(NotFound, match="unknown variant"):
        run(replica.catalog.delete_variant(new_ulid()))

    second = replica.image("windmill", "c").variant  # a hit: b's variant
    assert run(replica.catalog.delete_key_variants(second.pk_id)) == 1
    assert world.objects.list(second.stem) == []
    assert replica.image("windmill", "d").cache == "miss"
    with pytest.raises(NotFound, match="unknown prompt key"):
        run(replica.catalog.delete_key_variants("nova:" + "0" * 40))


def test_a_regeneration_derives_a_new_variant_for_the_user_up_to_the_limit(world: World) -> None:
    # img2img from a cover reads it from the object store
    renderer = RendererEngine(
        world.renderer.pipelines.manager, world.renderer.config, world.objects
    )
    replica = world.replica(renderer=renderer, regenerate_limit=2)
    original = replica.image("lighthouse keeper", "a").variant

    def regenerate(user_id: str, **change: Any) -> Delivery:
        return run(
            replica.deliverer.regenerate(original.variant_id, user_id, Regeneration(**change))
        )

    worded = regenerate("a", seed=7, prompt_extra="wearing a red scarf")
    derived = worded.variant
    assert worded.cache == "miss" and derived.variant_id != original.variant_id
    assert (derived.pk_id, derived.seed) == (original.pk_id, 7)
    assert derived.meta["parent_variant_id"] == original.variant_id
    # first: CLIP reads 77 tokens, which a soul's prompt may fill
    assert derived.meta["prompt"] == f"wearing a red scarf, {original.meta['prompt']}"
    assert derived.variant_id in world.seen("a")  # delivered to the user who asked

    from_cover = regenerate("b", strength=0.5).variant
    assert from_cover.meta["reference_key"] == original.meta["cover_key"]
    assert from_cover.meta["reference_strength"] == 0.5
    assert from_cover.meta["prompt"] == original.meta["prompt"]

    with pytest.raises(Conflict, match="2 variants derive from"):
        regenerate("c")
    again = run(replica.deliverer.regenerate(derived.variant_id, "c", Regeneration()))
    assert again.variant.meta["parent_variant_id"] == derived.variant_id  # a regeneration's own
    run(replica.catalog.delete_variant(original.variant_id))
    with pytest.raises(Gone):
        regenerate("c")
    with pytest.raises(NotFound):
        run(replica.deliverer.regenerate(new_ulid(), "c", Regeneration()))


def test_a_variant_set_in_motion_in_another_mode_is_a_new_variant_for_the_user(
    world: World,
) -> None:
    replica = world.replica()
    animated = replica.image("paper crane", "a", soul_id="valentina").variant
    assert animated.meta["animation"] == "animated"

    subtle = run(replica.deliverer.animate(animated.variant_id, "a", "subtle", frames=7))
    moved = subtle.variant
    assert subtle.cache == "miss" and moved.variant_id != animated.variant_id
    assert (moved.meta["animation"], moved.meta["frame_count"]) == ("subtle", 7)
    assert moved.meta["parent_variant_id"] == animated.variant_id
    assert (moved.pk_id, moved.seed) == (animated.pk_id, animated.seed)
    assert moved.meta["prompt"] == animated.meta["prompt"]
    assert "motion_module" not in moved.meta  # the render's facts only, then this animation's
    assert moved.variant_id in world.seen("a")

    still = replica.image("paper crane", "b").variant  # nova: no motion module
    with pytest.raises(Conflict, match="no motion_module"):
        run(replica.deliverer.animate(still.variant_id, "b", "animated"))
