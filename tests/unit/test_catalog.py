"""Unit tests for deployments.catalog.CatalogEngine over a real SQLite store (no Ray)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from deployments.catalog import CatalogConfig, CatalogEngine
from serve_app.catalog import key_index
from serve_app.catalog.ledger import CostConfig, utc_day
from serve_app.catalog.souls import load_souls
from serve_app.ids import new_ulid, now_ms
from serve_app.prompts import key_hash, normalize, pk_id
from serve_app.schemas import PromptKey, SoulSpec, Variant, VariantCost
from serve_app.storage.sqlite import SQLiteStore
from serve_app.storage.store import StoreUnavailable

T = TypeVar("T")
DIM = 384
NOVA_TAGS = ["anime", "pastel", "outlines"]


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def unit(angle_deg: float = 0.0) -> list[float]:
    """A 384-dim unit vector at ``angle_deg`` from e0 (in the e0/e1 plane): cosine = cos(angle)."""
    v = np.zeros(DIM, dtype=np.float32)
    v[0], v[1] = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return v.tolist()


def at_cosine(cos: float) -> list[float]:
    return unit(math.degrees(math.acos(cos)))


def norm_of(cue: str) -> str:
    return normalize(cue, NOVA_TAGS)[0]


@pytest.fixture(scope="module")
def souls() -> list[SoulSpec]:
    return load_souls("config/souls.yaml")


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "catalog.db"


def started(
    path: Path, souls: list[SoulSpec], config: CatalogConfig | None = None
) -> CatalogEngine:
    engine = CatalogEngine(SQLiteStore(path), config)
    run(engine.start(souls))
    return engine


@pytest.fixture
def engine(db_path: Path, souls: list[SoulSpec]) -> Iterator[CatalogEngine]:
    e = started(db_path, souls)
    yield e
    run(e.close())


def add_variants(engine: CatalogEngine, pk: str, n: int) -> list[str]:
    ids = [new_ulid() for _ in range(n)]
    for i, vid in enumerate(ids):
        variant = Variant(
            variant_id=vid,
            pk_id=pk,
            soul_id=pk.split(":")[0],
            asset_url=f"/media/{vid}.gif",
            storage_key=f"{vid}.gif",
            seed=i,
        )
        run(engine.put_variant(variant, []))
    return ids


# Souls and styles.


def test_start_seeds_souls_with_styles(engine: CatalogEngine) -> None:
    styles = {s.soul_id: s for s in run(engine.list_styles())}
    assert set(styles) == {"nova", "valentina"}
    assert styles["nova"].style_tags == NOVA_TAGS
    assert styles["valentina"].base_model_ref == "tiny-sdxl"
    assert run(engine.store.get_soul("nova")).display_name == "Nova"


def test_start_twice_is_idempotent_and_keeps_a_changed_style(
    engine: CatalogEngine, db_path: Path, souls: list[SoulSpec]
) -> None:
    nova = run(engine.get_style("nova"))
    changed = run(engine.put_style(nova.model_copy(update={"style_tags": ["watercolour"]})))
    assert changed is not None and changed.style_tags == ["watercolour"]
    run(engine.close())
    run(engine.start(souls))  # a restart of the same replica
    again = started(db_path, souls)  # and a second replica
    for e in (engine, again):
        assert run(e.get_style("nova")).style_tags == ["watercolour"]
        assert run(e.get_style("valentina")).style_tags == ["noir", "ink", "dramatic"]
        assert len(run(e.list_styles())) == 2
    run(again.close())


def test_put_style_for_unknown_soul_returns_none(engine: CatalogEngine) -> None:
    ghost = run(engine.get_style("nova")).model_copy(update={"soul_id": "ghost"})
    assert run(engine.put_style(ghost)) is None
    assert run(engine.get_style("ghost")) is None


def test_put_style_stamps_a_newer_timestamp(engine: CatalogEngine) -> None:
    before = run(engine.get_style("nova"))
    start = now_ms()
    # A client-sent timestamp is ignored: the catalog stamps its own.
    after = run(engine.put_style(before.model_copy(update={"negatives": [], "updated_at_ts": 5})))
    assert after is not None
    assert after.updated_at_ts >= start > before.updated_at_ts
    assert after.negatives == []
    assert run(engine.get_style("nova")) == after


def test_delete_style(engine: CatalogEngine) -> None:
    assert run(engine.delete_style("nova")) is True
    assert run(engine.get_style("nova")) is None
    assert run(engine.delete_style("nova")) is False
    assert run(engine.get_style("valentina")) is not None
    lookup = run(engine.lookup("nova", "penguin"))
    assert lookup is not None and lookup.style is None and lookup.key is None


# Prompt keys.


def test_lookup_of_unknown_soul_is_none(engine: CatalogEngine) -> None:
    assert run(engine.lookup("ghost", "penguin")) is None


def test_lookup_before_creation_has_no_key(engine: CatalogEngine) -> None:
    lookup = run(engine.lookup("nova", "A penguin!"))
    assert lookup is not None
    assert lookup.key is None
    assert lookup.cue_text == "penguin"
    assert lookup.key_norm == norm_of("penguin")
    assert lookup.style is not None and lookup.style.soul_id == "nova"


def test_resolve_similar_creates_then_finds_exact(engine: CatalogEngine) -> None:
    lookup = run(engine.lookup("nova", "penguin"))
    key, score = run(engine.resolve_similar("nova", lookup.key_norm, unit(0)))
    assert score is None  # the soul had no keys yet
    assert key.pk_id == pk_id("nova", lookup.key_norm)
    assert np.allclose(np.frombuffer(key.key_embed, dtype=np.float32), unit(0))

    # The same norm again is an exact hit, whatever the vector.
    again, score = run(engine.resolve_similar("nova", lookup.key_norm, unit(90)))
    assert (again.pk_id, score) == (key.pk_id, 1.0)
    assert run(engine.lookup("nova", "The penguin.")).key == key


def test_similar_vector_reuses_key(engine: CatalogEngine) -> None:
    first, _ = run(engine.resolve_similar("nova", norm_of("penguin"), unit(0)))
    reused, score = run(engine.resolve_similar("nova", norm_of("penguins"), at_cosine(0.9)))
    assert reused.pk_id == first.pk_id
    assert score == pytest.approx(0.9, abs=1e-5)
    assert run(engine.store.get_prompt_key(pk_id("nova", norm_of("penguins")))) is None


def test_vector_below_threshold_creates_new_key(engine: CatalogEngine) -> None:
    first, _ = run(engine.resolve_similar("nova", norm_of("penguin"), unit(0)))
    new, score = run(engine.resolve_similar("nova", norm_of("red car"), at_cosine(0.8)))
    assert new.pk_id == pk_id("nova", norm_of("red car")) != first.pk_id
    assert score == pytest.approx(0.8, abs=1e-5)
    assert len(run(engine.store.prompt_keys_page("nova", "", 10))) == 2


def test_embeddings_are_normalized_before_search(engine: CatalogEngine) -> None:
    first, _ = run(engine.resolve_similar("nova", norm_of("penguin"), unit(0)))
    scaled = [7.0 * x for x in at_cosine(0.9)]
    reused, score = run(engine.resolve_similar("nova", norm_of("penguins"), scaled))
    assert reused.pk_id == first.pk_id
    assert score == pytest.approx(0.9, abs=1e-5)


def test_similarity_is_per_soul(engine: CatalogEngine) -> None:
    nova, _ = run(engine.resolve_similar("nova", norm_of("penguin"), unit(0)))
    val, score = run(engine.resolve_similar("valentina", norm_of("penguin"), unit(0)))
    assert score is None
    assert val.pk_id.startswith("valentina:") and val.pk_id != nova.pk_id


def test_threshold_is_configurable(db_path: Path, souls: list[SoulSpec]) -> None:
    loose = started(db_path, souls, CatalogConfig(similarity_threshold=0.75))
    first, _ = run(loose.resolve_similar("nova", norm_of("penguin"), unit(0)))
    reused, _ = run(loose.resolve_similar("nova", norm_of("car"), at_cosine(0.8)))
    assert reused.pk_id == first.pk_id
    strict = CatalogConfig(similarity_threshold=0.95)
    loose.configure(strict)
    new, _ = run(loose.resolve_similar("nova", norm_of("penguins"), at_cosine(0.9)))
    assert new.pk_id != first.pk_id
    run(loose.close())


def test_new_replica_finds_keys_through_index_built_from_store(
    engine: CatalogEngine, db_path: Path, souls: list[SoulSpec]
) -> None:
    first, _ = run(engine.resolve_similar("nova", norm_of("penguin"), unit(0)))
    other, _ = run(engine.resolve_similar("nova", norm_of("red car"), unit(90)))
    replica = started(db_path, souls)
    found, score = run(replica.resolve_similar("nova", norm_of("penguins"), at_cosine(0.95)))
    assert found.pk_id == first.pk_id
    assert score == pytest.approx(0.95, abs=1e-5)
    found, _ = run(replica.resolve_similar("nova", norm_of("red cars"), unit(85)))
    assert found.pk_id == other.pk_id
    run(replica.close())


# Variants and user-unique delivery.


def test_claim_unseen_without_variants(engine: CatalogEngine) -> None:
    assert run(engine.claim_unseen(pk_id("nova", "penguin"), "u1")) is None


def test_claim_unseen_oldest_first_once_per_user(engine: CatalogEngine) -> None:
    pk = pk_id("nova", norm_of("penguin"))
    ids = add_variants(engine, pk, 3)
    add_variants(engine, pk_id("nova", norm_of("cat")), 2)  # another key's variants
    got = [run(engine.claim_unseen(pk, "u1")) for _ in range(3)]
    assert [v.variant_id for v in got if v] == ids
    assert run(engine.claim_unseen(pk, "u1")) is None
    first_for_u2 = run(engine.claim_unseen(pk, "u2"))
    assert first_for_u2 is not None and first_for_u2.variant_id == ids[0]


def test_concurrent_claims_of_one_user_are_distinct(engine: CatalogEngine) -> None:
    pk = pk_id("nova", norm_of("penguin"))
    ids = add_variants(engine, pk, 10)

    async def claims() -> list[Variant | None]:
        return await asyncio.gather(*(engine.claim_unseen(pk, "u1") for _ in range(10)))

    got = run(claims())
    assert sorted(v.variant_id for v in got if v) == ids
    assert run(engine.claim_unseen(pk, "u1")) is None


class YieldingStore(SQLiteStore):
    """Yields to the event loop before every read and claim, as a networked backend does."""

    async def list_variants(self, pk_id: str) -> list[Variant]:
        await asyncio.sleep(0)
        return await super().list_variants(pk_id)

    async def seen_among(self, user_id: str, variant_ids: list[str]) -> set[str]:
        await asyncio.sleep(0)
        return await super().seen_among(user_id, variant_ids)

    lost = 0

    async def claim(
        self, user_id: str, variant_id: str, ts: int, pk_id: str = "", via: str = ""
    ) -> bool:
        await asyncio.sleep(0)
        won = await super().claim(user_id, variant_id, ts, pk_id, via)
        self.lost += not won
        return won


def test_interleaved_concurrent_claims_lose_races_and_move_on(
    db_path: Path, souls: list[SoulSpec]
) -> None:
    store = YieldingStore(db_path)
    engine = CatalogEngine(store)
    run(engine.start(souls))
    pk = pk_id("nova", norm_of("penguin"))
    ids = add_variants(engine, pk, 10)

    async def claims() -> list[Variant | None]:
        # All 12 read "nothing seen" before any claim lands, so most claims lose races first.
        return await asyncio.gather(*(engine.claim_unseen(pk, "u1") for _ in range(12)))

    got = run(claims())
    delivered = [v.variant_id for v in got if v]
    assert sorted(delivered) == ids
    assert got.count(None) == 2
    assert store.lost > 0  # the races really happened
    run(engine.close())


def test_lookup_with_a_user_claims_in_the_same_call(engine: CatalogEngine) -> None:
    lookup = run(engine.lookup("nova", "penguin", "u1"))
    assert lookup.key is None and lookup.claimed is None  # no key yet: nothing to claim
    key, _ = run(engine.resolve_similar("nova", lookup.key_norm, unit(0)))
    ids = add_variants(engine, key.pk_id, 2)

    first = run(engine.lookup("nova", "A penguin!", "u1"))
    second = run(engine.lookup("nova", "penguin", "u1"))
    assert [first.claimed.variant_id, second.claimed.variant_id] == ids
    assert run(engine.lookup("nova", "penguin", "u1")).claimed is None  # all seen
    assert run(engine.lookup("nova", "penguin")).claimed is None  # no user: no claim
    assert run(engine.lookup("nova", "penguin", "u2")).claimed.variant_id == ids[0]


def test_replica_learns_keys_another_replica_created_before_creating_one(
    engine: CatalogEngine, db_path: Path, souls: list[SoulSpec]
) -> None:
    replica = started(db_path, souls)
    run(replica.resolve_similar("nova", norm_of("cat"), unit(90)))  # builds its index now
    first, _ = run(engine.resolve_similar("nova", norm_of("penguin"), unit(0)))
    found, score = run(replica.resolve_similar("nova", norm_of("penguins"), at_cosine(0.95)))
    assert found.pk_id == first.pk_id and score == pytest.approx(0.95, abs=1e-4)
    run(replica.close())


def test_catch_up_reads_the_key_log_not_the_souls_keys(
    engine: CatalogEngine, db_path: Path, souls: list[SoulSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its index is built, a replica learns new keys from the log past what it has read:
    no listing of the soul's keys on a new cue."""
    for i in range(20):
        run(engine.resolve_similar("nova", norm_of(f"thing {i}"), unit(3 * i)))
    replica = started(db_path, souls)
    run(replica.resolve_similar("nova", norm_of("cat"), unit(90)))  # builds its index now

    statements: list[str] = []
    rows = replica.store._rows

    async def recorded(sql: str, params: Any = ()) -> Any:
        statements.append(sql)
        return await rows(sql, params)

    monkeypatch.setattr(replica.store, "_rows", recorded)
    first, _ = run(engine.resolve_similar("nova", norm_of("penguin"), unit(-60)))
    found, score = run(replica.resolve_similar("nova", norm_of("penguins"), unit(-59)))
    assert found.pk_id == first.pk_id and score is not None and score > 0.99
    assert not [sql for sql in statements if "FROM prompt_key WHERE pk_id >=" in sql]
    assert [sql for sql in statements if "FROM prompt_key_log" in sql]
    run(replica.close())


def test_a_log_entry_that_commits_after_a_later_one_is_still_learned(
    engine: CatalogEngine, db_path: Path, souls: list[SoulSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ULID is taken before its entry's insert, so another replica's earlier one can land
    after a later one this replica has read: catch-up rereads a slack behind what it read."""
    monkeypatch.setattr(key_index, "LOG_REREAD_MS", 0)  # reread at each catch-up, not each 1 s
    replica = started(db_path, souls)
    run(replica.resolve_similar("nova", norm_of("cat"), unit(90)))  # builds its index
    early = new_ulid()  # taken first ...
    time.sleep(0.01)  # (a ULID of an earlier millisecond than the next entry's)
    run(engine.resolve_similar("nova", norm_of("red car"), unit(180)))
    run(replica.resolve_similar("nova", norm_of("tree"), unit(45)))  # reads the car's entry
    assert run(replica.indexes.get("nova")).log_seen > early
    penguin = PromptKey(
        pk_id=pk_id("nova", norm_of("penguin")),
        soul_id="nova",
        key_norm=norm_of("penguin"),
        key_hash=key_hash(norm_of("penguin")),
        key_embed=np.asarray(unit(-60), dtype=np.float32).tobytes(),
        updated_at_ts=now_ms(),
    )
    run(engine.store.upsert_prompt_key(penguin))
    run(engine.store.log_prompt_key("nova", early, penguin.pk_id))  # ... committed last
    found, score = run(replica.resolve_similar("nova", norm_of("penguins"), unit(-59)))
    assert found.pk_id == penguin.pk_id and score is not None and score > 0.99
    run(replica.close())


# Renders shared by several users, and the lock that spans replicas.


def test_put_variant_claims_it_for_the_users_who_need_it(engine: CatalogEngine) -> None:
    pk = pk_id("nova", norm_of("penguin"))
    [old] = add_variants(engine, pk, 1)
    run(engine.store.claim("u1", old, now_ms()))
    assert run(engine.users_lacking_unseen(pk, ["u1", "u2"])) == ["u1"]
    new = Variant(variant_id=new_ulid(), pk_id=pk, soul_id="nova", asset_url="a", storage_key="k")
    run(engine.store.claim("u3", new.variant_id, now_ms()))  # a race the write must survive
    assert run(engine.put_variant(new, ["u1", "u3"])) == ["u1"]
    assert [v.variant_id for v in run(engine.list_variants(pk))] == [old, new.variant_id]
    assert run(engine.users_lacking_unseen(pk, ["u1", "u2", "u3"])) == ["u1"]
    assert run(engine.users_lacking_unseen(pk_id("nova", "nothing"), ["u9"])) == ["u9"]


def test_a_variant_is_priced_as_recorded_once_and_reported_against_the_budget(
    db_path: Path, souls: list[SoulSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    prices = {"Renderer": 0.5, "Animator": 0.25}  # the Transcoder's seconds cost nothing here
    config = CatalogConfig(cost=CostConfig(usd_per_second=prices, daily_budget_usd=2.0))
    engine = started(db_path, souls, config)
    spent: list[float] = []
    monkeypatch.setattr(engine.ledger, "spent", lambda soul, cost, day_usd: spent.append(day_usd))
    pk, today = pk_id("nova", "cue"), utc_day(now_ms())

    def made(render_s: float) -> Variant:
        cost = VariantCost(render_s=render_s, animate_s=1.0, encode_s=10.0)
        vid = new_ulid()
        return Variant(
            variant_id=vid, pk_id=pk, soul_id="nova", asset_url="a", storage_key=vid, cost=cost
        )

    first = made(2.0)
    run(engine.put_variant(first, []))
    run(engine.put_variant(first, []))  # a retried write: one variant, spent once
    assert spent == [1.25]
    [stored] = run(engine.list_variants(pk))
    assert stored.cost == first.cost.model_copy(update={"usd": 1.25, "day": today})
    report = run(engine.cost_report(today, today))
    assert (report.today_usd, report.budget_used, report.budget_warning) == (1.25, 0.625, False)

    run(engine.put_variant(made(0.5), []))  # 1.75 of 2.0: past 80 %
    report = run(engine.cost_report(today, today))
    assert spent == [1.25, 1.75] and report.budget_warning and report.budget_used == 0.875
    [day] = report.days
    assert (day.day, day.soul_id, day.variants, day.render_s, day.usd) == (
        today,
        "nova",
        2,
        2.5,
        1.75,
    )
    assert run(engine.cost_report("2999-01-01", today)).days == []
    run(engine.close())


def test_work_lock_between_two_owners(engine: CatalogEngine) -> None:
    assert run(engine.try_lock("render:k", "a", 60_000)) is True
    assert run(engine.try_lock("render:k", "b", 60_000)) is False
    run(engine.unlock("render:k", "a"))
    assert run(engine.try_lock("render:k", "b", 60_000)) is True


# Idempotency records.


def test_idempotent_request_runs_once_then_replays(engine: CatalogEngine) -> None:
    first = run(engine.begin_request("c:k1", "fp", lease_ms=60_000))
    assert first.outcome == "started"
    assert run(engine.begin_request("c:k1", "fp", lease_ms=60_000)).outcome == "in_flight"
    assert run(engine.begin_request("c:k1", "other", lease_ms=60_000)).outcome == "mismatch"
    run(engine.finish_request("c:k1", "fp", first.version, {"v": 1}, retain_ms=60_000))
    replay = run(engine.begin_request("c:k1", "fp", lease_ms=60_000))
    assert (replay.outcome, replay.result) == ("replay", {"v": 1})
    assert run(engine.begin_request("c:k1", "other", lease_ms=60_000)).outcome == "mismatch"


def test_abandoned_request_runs_again(engine: CatalogEngine) -> None:
    first = run(engine.begin_request("c:k2", "fp", lease_ms=60_000))
    run(engine.abandon_request("c:k2", first.version))
    again = run(engine.begin_request("c:k2", "fp2", lease_ms=60_000))
    assert again.outcome == "started"


def test_expired_lease_or_retention_is_taken_over(engine: CatalogEngine) -> None:
    crashed = run(engine.begin_request("c:k3", "fp", lease_ms=0))
    taken = run(engine.begin_request("c:k3", "fp", lease_ms=60_000))
    assert taken.outcome == "started" and taken.version > crashed.version
    run(engine.finish_request("c:k3", "fp", crashed.version, {"late": True}, 60_000))  # lost CAS
    run(engine.finish_request("c:k3", "fp", taken.version, {"v": 2}, retain_ms=0))
    time.sleep(0.005)  # past the retention
    assert run(engine.begin_request("c:k3", "new", lease_ms=60_000)).outcome == "started"


# Selfies.

PARIS = ["eiffel", "louvre", "montmartre"]
ANGLES = ["closeup", "wide"]


def test_a_user_gets_every_landmark_before_a_repeat_from_a_new_angle(
    engine: CatalogEngine,
) -> None:
    shots = [run(engine.choose_shot("nova", "paris", "u1", PARIS, ANGLES)) for _ in range(4)]
    assert [landmark for landmark, _ in shots[:3]] == PARIS
    assert shots[3] == ("eiffel", "wide")  # least recently used, the other angle
    assert run(engine.choose_shot("nova", "paris", "u2", PARIS, ANGLES)) == ("eiffel", "closeup")


def test_concurrent_selfies_of_one_user_get_different_landmarks(engine: CatalogEngine) -> None:
    async def burst() -> list[tuple[str, str] | None]:
        return await asyncio.gather(
            *(engine.choose_shot("nova", "paris", "racer", PARIS, ANGLES) for _ in range(3))
        )

    shots = run(burst())
    assert sorted(shot[0] for shot in shots if shot) == sorted(PARIS)
    repeats = run(burst())  # all used: three repeats, still three different landmarks
    assert sorted(shot[0] for shot in repeats if shot) == sorted(PARIS)
    assert all(shot and shot[1] == "wide" for shot in repeats)


def test_ensure_key_is_exact_and_outside_similarity(engine: CatalogEngine) -> None:
    key = run(engine.ensure_key("nova", "selfie:paris:eiffel:happy:closeup"))
    assert run(engine.ensure_key("nova", "selfie:paris:eiffel:happy:closeup")) == key
    assert key.key_embed is None
    similar, _ = run(engine.resolve_similar("nova", norm_of("eiffel"), unit(0)))
    assert similar.pk_id != key.pk_id


def test_a_lock_whose_replica_went_quiet_is_taken_over_before_its_ttl(
    engine: CatalogEngine,
) -> None:
    run(engine.replica_alive("live", 60_000))
    run(engine.replica_alive("other", 60_000))
    run(engine.replica_alive("gone", 1))  # its last word, already out of date
    time.sleep(0.01)
    assert run(engine.try_lock("render:a", "live/1", 60_000))
    assert run(engine.try_lock("render:b", "gone/1", 60_000))
    assert not run(engine.try_lock("render:a", "other/2", 60_000))  # its replica lives
    assert run(engine.try_lock("render:b", "other/2", 60_000))  # taken over, TTL or not
    assert not run(engine.try_lock("render:b", "gone/1", 60_000))  # and the old owner lost it
    run(engine.store.try_lock("render:c", "legacy-owner", now_ms(), 60_000))
    assert not run(engine.try_lock("render:c", "other/2", 60_000))  # no replica named: TTL only


def test_a_similar_key_that_differs_in_a_contrast_is_not_reused(engine: CatalogEngine) -> None:
    """Embeddings barely tell "red scarf" from "blue scarf": a colour, count, place or time
    that differs makes another key, however close the vectors."""
    red, _ = run(engine.resolve_similar("nova", norm_of("wearing a red scarf"), unit(0)))
    blue, score = run(engine.resolve_similar("nova", norm_of("wearing a blue scarf"), unit(5)))
    assert blue.pk_id != red.pk_id and score is not None and score > 0.99
    same, _ = run(engine.resolve_similar("nova", norm_of("in a red scarf"), unit(-3)))
    assert same.pk_id == red.pk_id


def test_a_key_is_never_written_without_its_log_entry(
    engine: CatalogEngine, db_path: Path, souls: list[SoulSpec], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other replicas learn keys only from the log: a key whose entry could not be written
    would stay invisible to them, so the entry goes first, and a failed one stops the key."""

    async def unavailable(*args: Any) -> None:
        raise StoreUnavailable("the log is away")

    with monkeypatch.context() as m:
        m.setattr(engine.store, "log_prompt_key", unavailable)
        with pytest.raises(StoreUnavailable):
            run(engine.resolve_similar("nova", norm_of("penguin"), unit(0)))
    assert run(engine.store.get_prompt_key(pk_id("nova", norm_of("penguin")))) is None
    replica = started(db_path, souls)
    run(replica.indexes.get("nova"))  # built before the retry: it learns the key from the log
    key, _ = run(engine.resolve_similar("nova", norm_of("penguin"), unit(0)))  # the retry
    found, _ = run(replica.resolve_similar("nova", norm_of("penguins"), unit(1)))
    assert found.pk_id == key.pk_id
    run(replica.close())
