"""Unit tests for deployments.store.SQLiteStore: LWW upserts, claims, PK reads and query plans."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from deployments.store import SQLiteStore, StoreUnavailable, open_store
from serve_app.ids import new_ulid
from serve_app.prompts import key_hash, pk_id, soul_prefix_bounds
from serve_app.schemas import PromptKey, Soul, StyleProfile, Variant

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    s = SQLiteStore(tmp_path / "catalog.db")
    run(s.open())
    yield s
    run(s.close())


def make_style(ts: int, base: str = "tiny-sdxl", **extra: Any) -> StyleProfile:
    return StyleProfile(soul_id="nova", base_model_ref=base, extra=extra, updated_at_ts=ts)


def make_key(soul: str, norm: str, ts: int = 1, **meta: Any) -> PromptKey:
    return PromptKey(
        pk_id=pk_id(soul, norm),
        soul_id=soul,
        key_norm=norm,
        key_hash=key_hash(norm),
        meta=meta,
        updated_at_ts=ts,
    )


def make_variant(
    pk: str, vid: str | None = None, ts: int = 1, storage_key: str = "s", seed: int = 0
) -> Variant:
    return Variant(
        variant_id=vid or new_ulid(),
        pk_id=pk,
        soul_id=pk.split(":")[0],
        asset_url=f"file:///{storage_key}",
        storage_key=storage_key,
        seed=seed,
        updated_at_ts=ts,
    )


# Opening and the DSN.


def test_schema_creation_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "catalog.db"
    first = SQLiteStore(path)
    run(first.open())
    run(first.upsert_soul(Soul(soul_id="nova", display_name="Nova"), 1))
    run(first.close())
    second = SQLiteStore(path)
    run(second.open())
    assert run(second.get_soul("nova")) == Soul(soul_id="nova", display_name="Nova")
    run(second.ping())
    run(second.close())


def test_closed_store_is_unavailable(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "c.db")
    with pytest.raises(StoreUnavailable):
        run(s.ping())


def test_open_store_by_dsn(tmp_path: Path) -> None:
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'c.db'}"), SQLiteStore)
    with pytest.raises(ValueError, match="unsupported catalog DSN"):
        open_store("mysql://localhost/db")


# Last write wins.


def test_style_newer_write_wins_and_older_never_overwrites(store: SQLiteStore) -> None:
    run(store.upsert_style(make_style(100, base="first")))
    run(store.upsert_style(make_style(200, base="newer")))
    assert run(store.get_style("nova")).base_model_ref == "newer"
    run(store.upsert_style(make_style(150, base="stale")))
    got = run(store.get_style("nova"))
    assert (got.base_model_ref, got.updated_at_ts) == ("newer", 200)


def test_style_round_trips_every_field(store: SQLiteStore) -> None:
    style = StyleProfile(
        soul_id="nova",
        base_model_ref="tiny-sdxl",
        lora_ids=["loraA@v1"],
        style_tags=["anime", "pastel"],
        palette={"hint": "soft", "colors": ["#fff"]},
        negatives=["blurry"],
        motion_module="mm",
        extra={"animation": "subtle"},
        updated_at_ts=7,
    )
    run(store.upsert_style(style))
    assert run(store.get_style("nova")) == style
    assert run(store.list_styles()) == [style]


@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_style_equal_timestamp_resolved_by_tiebreak(store: SQLiteStore, order: str) -> None:
    low, high = make_style(100, base="low", k="a"), make_style(100, base="high", k="b")
    for style in [low, high] if order == "low_first" else [high, low]:
        run(store.upsert_style(style))
    assert run(store.get_style("nova")).base_model_ref == "high"


def test_insert_style_if_absent_does_not_overwrite(store: SQLiteStore) -> None:
    run(store.insert_style_if_absent(make_style(1, base="seed")))
    assert run(store.get_style("nova")).base_model_ref == "seed"
    run(store.upsert_style(make_style(500, base="user")))
    run(store.insert_style_if_absent(make_style(1, base="seed")))
    run(store.insert_style_if_absent(make_style(10_000, base="seed-newer")))
    assert run(store.get_style("nova")).base_model_ref == "user"


def test_delete_style_honours_timestamp(store: SQLiteStore) -> None:
    run(store.upsert_style(make_style(100)))
    assert run(store.delete_style("nova", 99)) is False
    assert run(store.get_style("nova")) is not None
    assert run(store.delete_style("nova", 101)) is True
    assert run(store.get_style("nova")) is None
    assert run(store.list_styles()) == []
    assert run(store.delete_style("nova", 1_000)) is False


def test_deleted_style_is_not_resurrected_by_an_older_write(store: SQLiteStore) -> None:
    run(store.upsert_style(make_style(100)))
    run(store.delete_style("nova", 200))
    run(store.upsert_style(make_style(150, base="late-but-older")))
    run(store.insert_style_if_absent(make_style(1, base="seed")))
    assert run(store.get_style("nova")) is None
    run(store.upsert_style(make_style(300, base="newer")))
    assert run(store.get_style("nova")).base_model_ref == "newer"


def test_prompt_key_lww(store: SQLiteStore) -> None:
    run(store.upsert_prompt_key(make_key("nova", "penguin", ts=200, v="new")))
    run(store.upsert_prompt_key(make_key("nova", "penguin", ts=100, v="old")))
    got = run(store.get_prompt_key(pk_id("nova", "penguin")))
    assert (got.meta, got.updated_at_ts) == ({"v": "new"}, 200)
    run(store.upsert_prompt_key(make_key("nova", "penguin", ts=300, v="newest")))
    assert run(store.get_prompt_key(pk_id("nova", "penguin"))).meta == {"v": "newest"}


def test_prompt_key_equal_timestamp_keeps_first_when_tiebreak_equal(store: SQLiteStore) -> None:
    # Same pk_id means same key_norm (the tiebreak): an equal-ts rewrite changes nothing.
    run(store.upsert_prompt_key(make_key("nova", "penguin", ts=100, v="a")))
    run(store.upsert_prompt_key(make_key("nova", "penguin", ts=100, v="b")))
    assert run(store.get_prompt_key(pk_id("nova", "penguin"))).meta == {"v": "a"}


def test_prompt_key_round_trips_embedding(store: SQLiteStore) -> None:
    key = make_key("nova", "penguin").model_copy(update={"key_embed": b"\x00\x01\x02"})
    run(store.upsert_prompt_key(key))
    assert run(store.get_prompt_key(key.pk_id)) == key
    assert run(store.get_prompt_key(pk_id("nova", "missing"))) is None


def test_variant_lww(store: SQLiteStore) -> None:
    pk, vid = pk_id("nova", "penguin"), new_ulid()
    run(store.upsert_variant(make_variant(pk, vid, ts=200, seed=2)))
    run(store.upsert_variant(make_variant(pk, vid, ts=100, seed=1)))
    assert [v.seed for v in run(store.list_variants(pk))] == [2]
    run(store.upsert_variant(make_variant(pk, vid, ts=300, seed=3)))
    assert [v.seed for v in run(store.list_variants(pk))] == [3]


@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_variant_equal_timestamp_resolved_by_tiebreak(store: SQLiteStore, order: str) -> None:
    pk, vid = pk_id("nova", "penguin"), new_ulid()
    low = make_variant(pk, vid, ts=100, storage_key="a", seed=1)
    high = make_variant(pk, vid, ts=100, storage_key="b", seed=2)
    for v in [low, high] if order == "low_first" else [high, low]:
        run(store.upsert_variant(v))
    [got] = run(store.list_variants(pk))
    assert (got.storage_key, got.seed) == ("b", 2)


# Reads.


def test_list_variants_only_that_key_oldest_first(store: SQLiteStore) -> None:
    pk, other = pk_id("nova", "penguin"), pk_id("nova", "cat")
    ids = [new_ulid() for _ in range(5)]
    for vid in reversed(ids):
        run(store.upsert_variant(make_variant(pk, vid)))
    run(store.upsert_variant(make_variant(other)))
    run(store.upsert_variant(make_variant(pk_id("nova2", "penguin"))))
    assert [v.variant_id for v in run(store.list_variants(pk))] == ids
    assert run(store.list_variants(pk_id("nova", "nothing"))) == []


def test_list_prompt_keys_only_that_soul(store: SQLiteStore) -> None:
    for soul in ["nova", "nova2", "nov", "valentina"]:
        for norm in ["penguin", "cat"]:
            run(store.upsert_prompt_key(make_key(soul, norm)))
    keys = run(store.list_prompt_keys("nova"))
    assert sorted(k.pk_id for k in keys) == sorted([pk_id("nova", "penguin"), pk_id("nova", "cat")])
    assert {k.soul_id for k in keys} == {"nova"}
    assert len(run(store.list_prompt_keys("nova2"))) == 2
    assert run(store.list_prompt_keys("nobody")) == []


def test_claim_once_per_user_and_variant(store: SQLiteStore) -> None:
    vid = new_ulid()
    assert run(store.claim("u1", vid, 1)) is True
    assert run(store.claim("u1", vid, 2)) is False
    assert run(store.claim("u2", vid, 3)) is True
    assert run(store.claim("u1", new_ulid(), 4)) is True


def test_seen_among(store: SQLiteStore) -> None:
    a, b, c = new_ulid(), new_ulid(), new_ulid()
    run(store.claim("u1", a, 1))
    run(store.claim("u1", c, 1))
    run(store.claim("u2", b, 1))
    assert run(store.seen_among("u1", [a, b, c])) == {a, c}
    assert run(store.seen_among("u2", [a, b, c])) == {b}
    assert run(store.seen_among("u3", [a, b, c])) == set()
    assert run(store.seen_among("u1", [])) == set()


def test_soul_round_trip_and_lww(store: SQLiteStore) -> None:
    run(store.upsert_soul(Soul(soul_id="nova", display_name="Nova"), 200))
    run(store.upsert_soul(Soul(soul_id="nova", display_name="Old"), 100))
    assert run(store.get_soul("nova")).display_name == "Nova"
    assert run(store.get_soul("missing")) is None


# Query plans of the hot-path reads: the statements are captured from the store's own calls.


def statements_of(store: SQLiteStore, coro: Coroutine[Any, Any, Any]) -> list[str]:
    """The SQL (with its values bound in) that one store call executes."""
    seen: list[str] = []
    store.db.set_trace_callback(seen.append)
    try:
        run(coro)
    finally:
        store.db.set_trace_callback(None)
    assert seen, "the call ran no SQL"
    return seen


def query_plan(store: SQLiteStore, sql: str) -> str:
    rows = store.db.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    return "\n".join(row["detail"] for row in rows)


def assert_uses_primary_key(plan: str, table: str) -> None:
    """A SEARCH through the table's primary-key index (the rowid PK or its autoindex)."""
    assert "SCAN" not in plan, plan
    pk_index = rf"SEARCH {table} USING (PRIMARY KEY|(COVERING )?INDEX sqlite_autoindex_{table}_1)"
    assert re.search(pk_index, plan), plan


@pytest.fixture
def filled(store: SQLiteStore) -> SQLiteStore:
    """A few thousand rows over three souls, one of them sharing the prefix "nova"."""

    async def fill() -> None:
        for soul in ["nova", "nova2", "valentina"]:
            for i in range(300):
                pk = pk_id(soul, f"cue {i}")
                await store.upsert_prompt_key(make_key(soul, f"cue {i}"))
                for _ in range(3):
                    vid = new_ulid()
                    await store.upsert_variant(make_variant(pk, vid))
                    await store.claim(f"user{i % 50}", vid, 1)

    store.db.execute("BEGIN")
    run(fill())
    store.db.execute("COMMIT")
    store.db.execute("ANALYZE")
    return store


def test_plan_variants_of_a_key(filled: SQLiteStore) -> None:
    [sql] = statements_of(filled, filled.list_variants(pk_id("nova", "cue 1")))
    plan = query_plan(filled, sql)
    assert_uses_primary_key(plan, "variant")
    assert "TEMP B-TREE" not in plan, plan  # ordered by the index itself


def test_plan_user_seen_membership(filled: SQLiteStore) -> None:
    ids = [new_ulid() for _ in range(5)]
    [sql] = statements_of(filled, filled.seen_among("user1", ids))
    plan = query_plan(filled, sql)
    assert_uses_primary_key(plan, "user_seen")
    assert "variant_id=?" in plan, plan  # both key columns, not a scan of the user's rows


def test_plan_prompt_keys_of_a_soul(filled: SQLiteStore) -> None:
    [sql] = statements_of(filled, filled.list_prompt_keys("nova"))
    low, high = soul_prefix_bounds("nova")
    assert f"pk_id >= '{low}' AND pk_id < '{high}'" in sql
    plan = query_plan(filled, sql)
    assert_uses_primary_key(plan, "prompt_key")
    assert "pk_id>? AND pk_id<?" in plan, plan
    assert "TEMP B-TREE" not in plan, plan


def test_plan_point_reads(filled: SQLiteStore) -> None:
    for table, call in [
        ("prompt_key", filled.get_prompt_key(pk_id("nova", "cue 1"))),
        ("soul_style_profile", filled.get_style("nova")),
        ("soul", filled.get_soul("nova")),
    ]:
        [sql] = statements_of(filled, call)
        assert_uses_primary_key(query_plan(filled, sql), table)


def test_claim_is_one_statement(store: SQLiteStore) -> None:
    [sql] = statements_of(store, store.claim("user1", new_ulid(), 1))
    assert sql.startswith("INSERT INTO user_seen") and "ON CONFLICT DO NOTHING" in sql
