"""The Store suite, run against both backends: LWW upserts, claims, locks, idempotency records,
primary-key reads and their query plans. PostgreSQL gets a database of its own."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from serve_app import cli
from serve_app.ids import new_ulid, now_ms
from serve_app.prompts import key_hash, pk_id, soul_prefix_bounds
from serve_app.schemas import PromptKey, Soul, StyleProfile, Variant, VariantCost
from serve_app.storage import open_store
from serve_app.storage.postgres import PostgresStore, drop_database
from serve_app.storage.sqlite import SQLiteStore
from serve_app.storage.store import Store, StoreUnavailable
from tests.support import POSTGRES_ADMIN_URL, require_postgres, run, temporary_database

TABLES = (
    "soul, soul_style_profile, prompt_key, prompt_key_log, variant, user_seen, work_lock, "
    "idempotency"
)


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with temporary_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        s: Store = SQLiteStore(tmp_path / "catalog.db")
        run(s.open())
    else:
        s = open_store(request.getfixturevalue("postgres_url"))
        run(s.open())
        run(s._write(f"TRUNCATE {TABLES}"))
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


def test_schema_creation_is_idempotent(store: Store) -> None:
    run(store.upsert_soul(Soul(soul_id="nova", display_name="Nova"), 1))
    run(store.close())
    run(store.open())  # applies the DDL again over existing tables
    assert run(store.get_soul("nova")) == Soul(soul_id="nova", display_name="Nova")
    run(store.ping())


def test_sqlite_creates_its_folder(tmp_path: Path) -> None:
    s = SQLiteStore(tmp_path / "nested" / "catalog.db")
    run(s.open())
    run(s.ping())
    run(s.close())


def test_closed_store_is_unavailable(store: Store) -> None:
    run(store.close())
    with pytest.raises(StoreUnavailable):
        run(store.ping())
    with pytest.raises(StoreUnavailable):
        run(store.get_soul("nova"))


def test_unreachable_postgres_is_unavailable_not_a_crash() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket closes
    store = open_store(f"postgresql://postgres@127.0.0.1:{port}/soul", timeout_s=1)
    with pytest.raises(StoreUnavailable, match="PostgreSQL unreachable"):
        run(store.open())


def test_open_store_by_dsn(tmp_path: Path) -> None:
    assert isinstance(open_store(f"sqlite:///{tmp_path / 'c.db'}"), SQLiteStore)
    for dsn in ["postgresql://postgres@127.0.0.1/soul", "postgres://u:p@db:5432/soul"]:
        assert isinstance(open_store(dsn), PostgresStore)
    with pytest.raises(ValueError, match="unsupported catalog DSN"):
        open_store("mysql://localhost/db")


# Last write wins.


def test_style_newer_write_wins_and_older_never_overwrites(store: Store) -> None:
    run(store.upsert_style(make_style(100, base="first")))
    run(store.upsert_style(make_style(200, base="newer")))
    assert run(store.get_style("nova")).base_model_ref == "newer"
    run(store.upsert_style(make_style(150, base="stale")))
    got = run(store.get_style("nova"))
    assert (got.base_model_ref, got.updated_at_ts) == ("newer", 200)


def test_style_round_trips_every_field(store: Store) -> None:
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
def test_style_equal_timestamp_resolved_by_tiebreak(store: Store, order: str) -> None:
    low, high = make_style(100, base="low", k="a"), make_style(100, base="high", k="b")
    for style in [low, high] if order == "low_first" else [high, low]:
        run(store.upsert_style(style))
    assert run(store.get_style("nova")).base_model_ref == "high"


def test_insert_style_if_absent_does_not_overwrite(store: Store) -> None:
    run(store.insert_style_if_absent(make_style(1, base="seed")))
    assert run(store.get_style("nova")).base_model_ref == "seed"
    run(store.upsert_style(make_style(500, base="user")))
    run(store.insert_style_if_absent(make_style(1, base="seed")))
    run(store.insert_style_if_absent(make_style(10_000, base="seed-newer")))
    assert run(store.get_style("nova")).base_model_ref == "user"


def test_delete_style_honours_timestamp(store: Store) -> None:
    run(store.upsert_style(make_style(100)))
    assert run(store.delete_style("nova", 99)) is False
    assert run(store.get_style("nova")) is not None
    assert run(store.delete_style("nova", 101)) is True
    assert run(store.get_style("nova")) is None
    assert run(store.list_styles()) == []
    assert run(store.delete_style("nova", 1_000)) is False


def test_deleting_a_style_that_is_not_there_writes_nothing(store: Store) -> None:
    assert run(store.delete_style("ghost", 1_000)) is False
    assert run(store._rows("SELECT * FROM soul_style_profile")) == []


def test_deleted_style_is_not_resurrected_by_an_older_write(store: Store) -> None:
    run(store.upsert_style(make_style(100)))
    run(store.delete_style("nova", 200))
    run(store.upsert_style(make_style(150, base="late-but-older")))
    run(store.insert_style_if_absent(make_style(1, base="seed")))
    assert run(store.get_style("nova")) is None
    run(store.upsert_style(make_style(300, base="newer")))
    assert run(store.get_style("nova")).base_model_ref == "newer"


def test_prompt_key_lww(store: Store) -> None:
    run(store.upsert_prompt_key(make_key("nova", "penguin", ts=200, v="new")))
    run(store.upsert_prompt_key(make_key("nova", "penguin", ts=100, v="old")))
    got = run(store.get_prompt_key(pk_id("nova", "penguin")))
    assert (got.meta, got.updated_at_ts) == ({"v": "new"}, 200)
    run(store.upsert_prompt_key(make_key("nova", "penguin", ts=300, v="newest")))
    assert run(store.get_prompt_key(pk_id("nova", "penguin"))).meta == {"v": "newest"}


def test_prompt_key_equal_timestamp_keeps_first_when_tiebreak_equal(store: Store) -> None:
    # Same pk_id means same key_norm (the tiebreak): an equal-ts rewrite changes nothing.
    run(store.upsert_prompt_key(make_key("nova", "penguin", ts=100, v="a")))
    run(store.upsert_prompt_key(make_key("nova", "penguin", ts=100, v="b")))
    assert run(store.get_prompt_key(pk_id("nova", "penguin"))).meta == {"v": "a"}


def test_prompt_key_round_trips_embedding(store: Store) -> None:
    key = make_key("nova", "penguin").model_copy(update={"key_embed": b"\x00\x01\x02"})
    run(store.upsert_prompt_key(key))
    assert run(store.get_prompt_key(key.pk_id)) == key
    assert run(store.get_prompt_key(pk_id("nova", "missing"))) is None


def test_variant_lww(store: Store) -> None:
    pk, vid = pk_id("nova", "penguin"), new_ulid()
    run(store.upsert_variant(make_variant(pk, vid, ts=200, seed=2)))
    run(store.upsert_variant(make_variant(pk, vid, ts=100, seed=1)))
    assert [v.seed for v in run(store.list_variants(pk))] == [2]
    run(store.upsert_variant(make_variant(pk, vid, ts=300, seed=3)))
    assert [v.seed for v in run(store.list_variants(pk))] == [3]


@pytest.mark.parametrize("order", ["low_first", "high_first"])
def test_variant_equal_timestamp_resolved_by_tiebreak(store: Store, order: str) -> None:
    pk, vid = pk_id("nova", "penguin"), new_ulid()
    low = make_variant(pk, vid, ts=100, storage_key="a", seed=1)
    high = make_variant(pk, vid, ts=100, storage_key="b", seed=2)
    for v in [low, high] if order == "low_first" else [high, low]:
        run(store.upsert_variant(v))
    [got] = run(store.list_variants(pk))
    assert (got.storage_key, got.seed) == ("b", 2)


def test_a_deleted_variant_is_never_listed_counted_or_claimed_again(store: Store) -> None:
    pk = pk_id("nova", "penguin")
    kept, gone = make_variant(pk, ts=100, storage_key="soul/a.gif"), make_variant(pk, ts=100)
    for v in (kept, gone):
        run(store.upsert_variant(v))
    assert run(store.claim("u1", gone.variant_id, 1, pk))
    assert run(store.delete_variant(gone, 200))

    assert [v.variant_id for v in run(store.list_variants(pk))] == [kept.variant_id]
    assert run(store.count_variants(pk)) == 1
    assert not run(store.claim("u2", gone.variant_id, 2, pk))  # never delivered again
    assert run(store.claim("u2", kept.variant_id, 2, pk))
    assert run(store.seen_among("u1", [gone.variant_id])) == {gone.variant_id}  # history stays
    tombstone = run(store.find_variant(gone.variant_id))
    assert tombstone is not None and tombstone.deleted and tombstone.pk_id == pk
    # a retried create of the variant (its older timestamp) cannot bring it back
    run(store.upsert_variant(gone))
    assert run(store.count_variants(pk)) == 1
    assert not run(store.delete_variant(gone, 150))  # nor can an older delete overwrite
    found = run(store.find_variant(kept.variant_id))
    assert found is not None and not found.deleted
    assert run(store.find_variant(new_ulid())) is None


# Reads.


def test_list_variants_only_that_key_oldest_first(store: Store) -> None:
    pk, other = pk_id("nova", "penguin"), pk_id("nova", "cat")
    ids = [new_ulid() for _ in range(5)]
    for vid in reversed(ids):
        run(store.upsert_variant(make_variant(pk, vid)))
    run(store.upsert_variant(make_variant(other)))
    run(store.upsert_variant(make_variant(pk_id("nova2", "penguin"))))
    assert [v.variant_id for v in run(store.list_variants(pk))] == ids
    assert run(store.list_variants(pk_id("nova", "nothing"))) == []


def test_prompt_keys_pages_hold_only_that_soul(store: Store) -> None:
    for soul in ["nova", "nova2", "nov", "valentina"]:
        for norm in ["penguin", "cat", "tree"]:
            run(store.upsert_prompt_key(make_key(soul, norm)))
    first = run(store.prompt_keys_page("nova", "", 2))
    rest = run(store.prompt_keys_page("nova", first[-1].pk_id, 2))
    keys = [k.pk_id for k in first + rest]
    assert keys == sorted(pk_id("nova", norm) for norm in ["penguin", "cat", "tree"])
    assert len(first) == 2 and run(store.prompt_keys_page("nova", keys[-1], 2)) == []
    assert len(run(store.prompt_keys_page("nova2", "", 10))) == 3
    assert run(store.prompt_keys_page("nobody", "", 10)) == []
    vectors = run(store.key_vectors_page("nova", "", 10))
    assert [(pk, embed) for pk, embed in vectors] == [
        (k.pk_id, k.key_embed or b"") for k in first + rest
    ]
    texts = run(store.key_texts_page("nova", "", 10))
    assert texts == [(k.pk_id, k.key_norm, k.key_embed is not None) for k in first + rest]
    assert run(store.count_prompt_keys("nova")) == 3 and run(store.count_prompt_keys("nobody")) == 0


def test_a_rewritten_key_keeps_its_id_and_meta_unless_a_later_write_stands(store: Store) -> None:
    key = make_key("nova", "the penguin", why="kept")
    run(store.upsert_prompt_key(key))
    assert run(store.rewrite_prompt_key(key.pk_id, "penguin", b"\x01" * 8, key.updated_at_ts + 1))
    stored = run(store.get_prompt_key(key.pk_id))
    assert stored is not None and stored.pk_id == key.pk_id and stored.meta == {"why": "kept"}
    assert (stored.key_norm, stored.key_hash, stored.key_embed) == (
        "penguin",
        key_hash("penguin"),
        b"\x01" * 8,
    )
    assert not run(store.rewrite_prompt_key(key.pk_id, "old", b"", key.updated_at_ts))
    assert not run(store.rewrite_prompt_key(pk_id("nova", "nothing"), "x", b"", 10**13))


def test_a_users_history_pages_newest_variant_first(store: Store) -> None:
    ids = [new_ulid() for _ in range(5)]
    for i, vid in enumerate(ids):
        assert run(store.claim("u1", vid, 100 + i, pk_id("nova", "cat")))
    assert run(store.claim("u2", new_ulid(), 1))
    first = run(store.seen_page("u1", "", 3))
    assert [r["variant_id"] for r in first] == ids[::-1][:3]
    assert (first[0]["pk_id"], first[0]["seen_at_ts"]) == (pk_id("nova", "cat"), 104)
    rest = run(store.seen_page("u1", first[-1]["variant_id"], 3))
    assert [r["variant_id"] for r in rest] == ids[::-1][3:]
    assert run(store.seen_page("nobody", "", 3)) == []


def test_claim_once_per_user_and_variant(store: Store) -> None:
    vid = new_ulid()
    assert run(store.claim("u1", vid, 1)) is True
    assert run(store.claim("u1", vid, 2)) is False
    assert run(store.claim("u2", vid, 3)) is True
    assert run(store.claim("u1", new_ulid(), 4)) is True


def test_seen_among(store: Store) -> None:
    a, b, c = new_ulid(), new_ulid(), new_ulid()
    run(store.claim("u1", a, 1))
    run(store.claim("u1", c, 1))
    run(store.claim("u2", b, 1))
    assert run(store.seen_among("u1", [a, b, c])) == {a, c}
    assert run(store.seen_among("u2", [a, b, c])) == {b}
    assert run(store.seen_among("u3", [a, b, c])) == set()
    assert run(store.seen_among("u1", [])) == set()


def test_soul_round_trip_and_lww(store: Store) -> None:
    run(store.upsert_soul(Soul(soul_id="nova", display_name="Nova"), 200))
    run(store.upsert_soul(Soul(soul_id="nova", display_name="Old"), 100))
    assert run(store.get_soul("nova")).display_name == "Nova"
    assert run(store.get_soul("missing")) is None


# Locks and idempotency records.


def test_lock_is_exclusive_until_released_or_expired(store: Store) -> None:
    assert run(store.try_lock("render:nova:k", "a", ts=1_000, ttl_ms=500)) is True
    assert run(store.try_lock("render:nova:k", "b", ts=1_100, ttl_ms=500)) is False
    assert run(store.try_lock("render:nova:k", "a", ts=1_200, ttl_ms=500)) is True  # renewal
    assert run(store.try_lock("render:nova:k", "b", ts=1_600, ttl_ms=500)) is False  # renewed
    assert run(store.try_lock("render:nova:other", "b", ts=1_600, ttl_ms=500)) is True
    assert run(store.try_lock("render:nova:k", "b", ts=1_700, ttl_ms=500)) is True  # expired
    run(store.unlock("render:nova:k", "a"))  # not the owner any more: changes nothing
    assert run(store.try_lock("render:nova:k", "a", ts=1_800, ttl_ms=500)) is False
    run(store.unlock("render:nova:k", "b"))
    assert run(store.try_lock("render:nova:k", "a", ts=1_900, ttl_ms=500)) is True


def test_idempotency_record_compare_and_set(store: Store) -> None:
    assert run(store.insert_idempotency("k", '{"state": "pending"}', 10)) is True
    assert run(store.insert_idempotency("k", '{"state": "other"}', 11)) is False
    record, ts = run(store.get_idempotency("k"))
    assert (record, ts) == ('{"state": "pending"}', 10)
    assert run(store.replace_idempotency("k", '{"state": "done"}', 20, if_ts=11)) is False
    assert run(store.replace_idempotency("k", '{"state": "done"}', 20, if_ts=10)) is True
    run(store.delete_idempotency("k", if_ts=10))  # a stale version: changes nothing
    assert run(store.get_idempotency("k")) == ('{"state": "done"}', 20)
    run(store.delete_idempotency("k", if_ts=20))
    assert run(store.get_idempotency("k")) is None


def test_json_and_bytes_round_trip_exactly(store: Store) -> None:
    meta = {"nested": {"b": [1, 2.5, None, True]}, "text": "caf\u00e9 \u2603", "a": ""}
    key = make_key("nova", "penguin", **meta).model_copy(update={"key_embed": bytes(range(256))})
    run(store.upsert_prompt_key(key))
    assert run(store.get_prompt_key(key.pk_id)) == key


# Query plans of the hot-path reads, on tables with thousands of rows. The statements are
# captured from the store's own calls and explained by the backend that runs them.


def statements_of(store: Store, coro: Coroutine[Any, Any, Any]) -> list[tuple[str, tuple]]:
    seen: list[tuple[str, tuple]] = []
    original = store._rows

    async def recording(sql: str, params: Any = ()) -> Any:
        seen.append((sql, tuple(params)))
        return await original(sql, params)

    store._rows = recording  # type: ignore[method-assign]
    try:
        run(coro)
    finally:
        del store._rows
    assert seen, "the call ran no SQL"
    return seen


def query_plan(store: Store, sql: str, params: tuple) -> str:
    if isinstance(store, SQLiteStore):
        rows = store.db.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()
        return "\n".join(row["detail"] for row in rows)
    rows = run(store._rows(f"EXPLAIN {sql}", params))
    return "\n".join(row["QUERY PLAN"] for row in rows)


def write_analyzed(store: Store, statements: list[tuple[str, list[tuple[Any, ...]]]]) -> None:
    """Rows written in bulk, each statement with its rows, then the tables analyzed, so the
    planner knows their sizes."""
    if isinstance(store, SQLiteStore):
        store.db.execute("BEGIN")
        for sql, rows in statements:
            store.db.executemany(sql, rows)
        store.db.execute("COMMIT")
        store.db.execute("ANALYZE")
        return
    assert isinstance(store, PostgresStore)
    with psycopg.connect(store.dsn) as conn:
        for sql, rows in statements:
            conn.cursor().executemany(sql.replace("?", "%s"), rows)
        conn.commit()
        conn.autocommit = True
        conn.execute("ANALYZE")


def assert_uses_primary_key(store: Store, plan: str, table: str, ordered: bool = False) -> None:
    """A search through the table's primary-key index, never a scan of the table.

    ``ordered``: SQLite reads the rows in index order (no sort step). PostgreSQL's planner may
    still sort the handful of rows it found through the index when that is cheaper."""
    if isinstance(store, SQLiteStore):
        assert "SCAN" not in plan, plan
        pk = rf"SEARCH {table} USING (PRIMARY KEY|(COVERING )?INDEX sqlite_autoindex_{table}_1)"
        assert re.search(pk, plan), plan
        assert not ordered or "TEMP B-TREE" not in plan, plan
    else:
        assert "Seq Scan" not in plan, plan
        pk = rf"(Index (Only )?Scan (Backward )?using|Bitmap Index Scan on) {table}_pkey"
        assert re.search(pk, plan), plan


SOULS = ["nova", "nova2", "valentina", *(f"filler{i}" for i in range(20))]


@pytest.fixture
def filled(store: Store) -> Store:
    """About 2,300 keys, 4,600 variants (made over 30 days) and 4,600 seen rows over 23 souls,
    one of them sharing the prefix "nova", and 2,000 souls with styles; written in bulk, then
    analyzed."""
    souls = [(f"soul{i}", f"Soul {i}", 1) for i in range(2000)] + [("nova", "Nova", 1)]
    styles = [(soul, "tiny-sdxl", "[]", "{}", "[]", "{}", 1) for soul, _, _ in souls]
    keys, logged, variants, seen = [], [], [], []
    for soul in SOULS:
        for i in range(100):
            pk = pk_id(soul, f"cue {i}")
            keys.append((pk, soul, f"cue {i}", key_hash(f"cue {i}"), "{}", 1))
            logged.append((soul, new_ulid(), pk))
            for _ in range(2):
                vid = new_ulid()
                day = f"2026-11-{1 + len(variants) % 30:02d}"
                variants.append((pk, vid, soul, "u", "s", "{}", day, 1.0, 2.0, 0.1, 0.01, 1))
                seen.append((f"user{i % 50}", vid, 1))
    statements = [
        ("INSERT INTO soul (soul_id, display_name, updated_at_ts) VALUES (?, ?, ?)", souls),
        (
            "INSERT INTO soul_style_profile (soul_id, base_model_ref, lora_ids_json, palette_json, "
            "negatives_json, extra_json, updated_at_ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
            styles,
        ),
        (
            "INSERT INTO prompt_key (pk_id, soul_id, key_norm, key_hash, meta_json, updated_at_ts) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            keys,
        ),
        ("INSERT INTO prompt_key_log (soul_id, seq, pk_id) VALUES (?, ?, ?)", logged),
        (
            "INSERT INTO variant (pk_id, variant_id, soul_id, asset_url, storage_key, meta_json, "
            "cost_day, render_s, animate_s, encode_s, cost_usd, updated_at_ts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            variants,
        ),
        ("INSERT INTO user_seen (user_id, variant_id, seen_at_ts) VALUES (?, ?, ?)", seen),
    ]
    write_analyzed(store, statements)
    return store


def test_plan_variants_of_a_key(filled: Store) -> None:
    [(sql, params)] = statements_of(filled, filled.list_variants(pk_id("nova", "cue 1")))
    assert_uses_primary_key(filled, query_plan(filled, sql, params), "variant", ordered=True)


def test_plan_user_seen_membership(filled: Store) -> None:
    ids = [new_ulid() for _ in range(5)]
    [(sql, params)] = statements_of(filled, filled.seen_among("user1", ids))
    plan = query_plan(filled, sql, params)
    assert_uses_primary_key(filled, plan, "user_seen")
    # Both key columns bound: a lookup of those pairs, not a walk over all the user's rows.
    assert "variant_id=?" in plan or "variant_id = ANY" in plan, plan


def test_plan_prompt_keys_of_a_soul(filled: Store) -> None:
    [(sql, params)] = statements_of(filled, filled.prompt_keys_page("nova", "", 500))
    low, high = soul_prefix_bounds("nova")
    assert "pk_id >= ? AND pk_id > ? AND pk_id < ?" in sql and params == (low, "", high, 500)
    plan = query_plan(filled, sql, params)
    assert_uses_primary_key(filled, plan, "prompt_key", ordered=True)
    assert len(run(filled.prompt_keys_page("nova", "", 500))) == 100  # not nova2's
    for call in (filled.key_vectors_page("nova", "", 500), filled.key_texts_page("nova", "", 9)):
        [(sql, params)] = statements_of(filled, call)
        assert_uses_primary_key(filled, query_plan(filled, sql, params), "prompt_key", ordered=True)
    [(sql, params)] = statements_of(filled, filled.count_prompt_keys("nova"))
    assert_uses_primary_key(filled, query_plan(filled, sql, params), "prompt_key")


def test_plan_a_users_history(filled: Store) -> None:
    [(sql, params)] = statements_of(filled, filled.seen_page("user1", "", 10))
    assert_uses_primary_key(filled, query_plan(filled, sql, params), "user_seen", ordered=True)
    assert len(run(filled.seen_page("user1", "", 1000))) > 0


def test_plan_key_log_after_a_point(filled: Store) -> None:
    """What a catalog replica reads to catch up: only the soul's log past a point."""
    [first, *rest] = run(filled.prompt_key_log_after("nova", "", 1000))
    assert len(rest) == 99
    [(sql, params)] = statements_of(filled, filled.prompt_key_log_after("nova", first["seq"], 10))
    assert_uses_primary_key(filled, query_plan(filled, sql, params), "prompt_key_log", ordered=True)
    assert [e["pk_id"] for e in run(filled.prompt_key_log_after("nova", first["seq"], 10))] == [
        e["pk_id"] for e in rest[:10]
    ]


def test_plan_point_reads(filled: Store) -> None:
    for table, call in [
        ("prompt_key", lambda: filled.get_prompt_key(pk_id("nova", "cue 1"))),
        ("soul_style_profile", lambda: filled.get_style("nova")),
        ("soul", lambda: filled.get_soul("nova")),
    ]:
        [(sql, params)] = statements_of(filled, call())
        assert_uses_primary_key(filled, query_plan(filled, sql, params), table)


def test_plan_a_variant_by_its_id(filled: Store) -> None:
    [(sql, params)] = statements_of(filled, filled.find_variant(new_ulid()))
    plan = query_plan(filled, sql, params)
    assert "variant_by_id" in plan and "SCAN variant" not in plan and "Seq Scan" not in plan, plan


def test_plan_a_days_spend(filled: Store) -> None:
    for call in (filled.day_cost_usd("2026-11-30"), filled.cost_by_day("2026-11-29")):
        [(sql, params)] = statements_of(filled, call)
        plan = query_plan(filled, sql, params)
        assert "variant_by_cost_day" in plan and "SCAN variant" not in plan, plan
        assert "Seq Scan" not in plan, plan


def costing(soul: str, day: str, render_s: float, usd: float) -> Variant:
    cost = VariantCost(render_s=render_s, animate_s=1.0, encode_s=0.5, usd=usd, day=day)
    return make_variant(pk_id(soul, "cue"), ts=2).model_copy(update={"cost": cost})


def test_costs_sum_per_day_and_soul_and_outlive_a_deletion(store: Store) -> None:
    made = [
        costing("nova", "2026-11-30", 2.0, 0.25),
        costing("nova", "2026-11-30", 3.0, 0.5),
        costing("valentina", "2026-11-30", 1.0, 0.125),
        costing("nova", "2026-12-01", 4.0, 1.0),
        make_variant(pk_id("nova", "cue"), ts=2),  # made before costs: not counted
    ]
    for variant in made:
        run(store.upsert_variant(variant))
    assert run(store.get_variant(made[0].pk_id, made[0].variant_id)) == made[0]
    assert run(store.delete_variant(made[1], 3))  # its cost was spent all the same

    assert run(store.day_cost_usd("2026-11-30")) == 0.875
    assert run(store.day_cost_usd("2026-12-02")) == 0
    by_day = [dict(r) for r in run(store.cost_by_day("2026-11-30"))]
    assert [(r["cost_day"], r["soul_id"], r["variants"], r["usd"]) for r in by_day] == [
        ("2026-11-30", "nova", 2, 0.75),
        ("2026-11-30", "valentina", 1, 0.125),
        ("2026-12-01", "nova", 1, 1.0),
    ]
    assert by_day[0]["render_s"] == 5.0 and by_day[0]["animate_s"] == 2.0
    assert [r["cost_day"] for r in run(store.cost_by_day("2026-12-01"))] == ["2026-12-01"]


def test_claim_is_one_statement(store: Store) -> None:
    [(sql, _)] = statements_of(store, store.claim("user1", new_ulid(), 1))
    assert sql.startswith("INSERT INTO user_seen") and "ON CONFLICT DO NOTHING" in sql


def test_soul_db_init_creates_the_database_once_and_applies_the_schema(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    require_postgres()
    dsn = urlsplit(POSTGRES_ADMIN_URL)._replace(path=f"/soul_init_{new_ulid().lower()}").geturl()
    monkeypatch.setenv("SOUL_DATABASE_URL", dsn)
    try:
        assert cli.main(["db", "init"]) == 0
        assert "(database created)" in capsys.readouterr().out
        assert cli.main(["db", "init"]) == 0
        assert "created" not in capsys.readouterr().out
        with psycopg.connect(dsn) as conn:
            tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables").fetchall()}
        assert set(TABLES.split(", ")) <= tables
    finally:
        drop_database(dsn)


def test_landmark_log_insert_once_then_compare_and_set(store: Store) -> None:
    args = ("nova", "paris", "u1")
    assert run(store.landmarks_used(*args)) == {}
    assert run(store.take_landmark(*args, "eiffel", "closeup", ts=10, if_ts=None)) is True
    assert run(store.take_landmark(*args, "eiffel", "wide", ts=11, if_ts=None)) is False
    assert run(store.landmarks_used(*args)) == {"eiffel": (10, "closeup")}
    assert run(store.take_landmark(*args, "eiffel", "wide", ts=20, if_ts=9)) is False  # stale
    assert run(store.take_landmark(*args, "eiffel", "wide", ts=20, if_ts=10)) is True
    assert run(store.landmarks_used(*args)) == {"eiffel": (20, "wide")}
    assert run(store.landmarks_used("nova", "paris", "u2")) == {}  # users are independent
    assert run(store.landmarks_used("valentina", "paris", "u1")) == {}


def test_plan_landmarks_of_a_user_in_a_city(filled: Store) -> None:
    rows = [(f"soul{i % 40}", "paris", f"user{i}", "eiffel", 1) for i in range(3000)]
    sql = (
        "INSERT INTO landmark_log (soul_id, city_key, user_id, landmark_key, used_at_ts) "
        "VALUES (?, ?, ?, ?, ?)"
    )
    if isinstance(filled, SQLiteStore):
        filled.db.executemany(sql, rows)
        filled.db.execute("ANALYZE")
    else:
        assert isinstance(filled, PostgresStore)
        with psycopg.connect(filled.dsn) as conn:
            conn.cursor().executemany(sql.replace("?", "%s"), rows)
            conn.commit()
            conn.autocommit = True
            conn.execute("ANALYZE landmark_log")
    [(query, params)] = statements_of(filled, filled.landmarks_used("soul1", "paris", "user1"))
    assert_uses_primary_key(filled, query_plan(filled, query, params), "landmark_log")


def test_the_sweeper_deletes_only_what_expired(store: Store) -> None:
    from serve_app.catalog.sweeper import Sweeper

    ts = now_ms()
    assert run(store.try_lock("render:old", "a", ts - 10_000, 1_000))  # expired 9 s ago
    assert run(store.try_lock("render:live", "b", ts, 60_000))
    done = {"state": "done", "fingerprint": "f", "result": {}}
    run(store.insert_idempotency("old", json.dumps({**done, "expires_at_ts": ts - 1}), ts - 5))
    run(store.insert_idempotency("live", json.dumps({**done, "expires_at_ts": ts + 9e6}), ts))
    assert run(Sweeper(store, page=1).sweep()) == {"work_lock": 1, "idempotency": 1, "objects": 0}
    assert [r["lock_key"] for r in run(store.locks_after("", 10))] == ["render:live"]
    assert [r["idem_key"] for r in run(store.idempotency_after("", 10))] == ["live"]


def test_the_sweeper_removes_orphan_objects_past_their_grace(store: Store, tmp_path: Path) -> None:
    from ulid import ULID

    from serve_app.catalog.sweeper import Sweeper
    from serve_app.storage.local import LocalObjectStore, MediaSigner

    objects = LocalObjectStore(str(tmp_path / "objects"), MediaSigner(b"k" * 32))
    pk = pk_id("nova", "penguin")
    stem = f"soul/nova/key/{pk.split(':')[1]}/variant"
    hour_ago = ULID.from_timestamp(time.time() - 3600)
    recorded, orphan, fresh, deleted = (
        str(ULID.from_timestamp(time.time() - 3600)),
        str(hour_ago),
        new_ulid(),
        str(ULID.from_timestamp(time.time() - 3600)),
    )
    run(store.upsert_variant(make_variant(pk, recorded)))
    tombstone = make_variant(pk, deleted)
    run(store.upsert_variant(tombstone))
    run(store.delete_variant(tombstone, 10))  # whose objects could not all be removed
    for variant_id in (recorded, orphan, fresh, deleted):
        for ext in ("gif", "png", "thumb.webp", "json"):
            objects.put(f"{stem}/{variant_id}.{ext}", b"x")
    objects.put("soul/nova/reference/r.png", b"x")  # not a variant's: never touched
    swept = run(Sweeper(store, objects, grace_s=600).sweep())
    assert swept["objects"] == 8
    left = {k.rpartition("/")[2].partition(".")[0] for k in objects.list(f"{stem}/")}
    assert left == {recorded, fresh}  # the recorded one, and one still within its grace
    assert objects.exists("soul/nova/reference/r.png")


def test_a_statement_whose_backend_is_terminated_under_it_runs_again(postgres_url: str) -> None:
    """A statement in flight when the server drops its connection is made once more on
    another one (every statement is a read or an idempotent write), not a 503."""
    store = open_store(postgres_url, pool_min=2, pool_max=4, timeout_s=5)
    run(store.open())
    database = urlsplit(postgres_url).path.lstrip("/")

    async def slow_read_under_a_failover() -> Any:
        read = asyncio.ensure_future(store._rows("SELECT 1 AS ok FROM pg_sleep(0.5)"))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(terminate_backends, database)
        return await asyncio.gather(read, return_exceptions=True)

    try:
        assert run(slow_read_under_a_failover()) == [[{"ok": 1}]]
    finally:
        run(store.close())


def terminate_backends(database: str) -> int:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        [(killed,)] = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        ).fetchall()
    return int(killed)


def test_postgres_recovers_at_once_when_its_backends_are_terminated(postgres_url: str) -> None:
    """The server stays up but kills every connection of ours (a restart, a failover,
    pg_terminate_backend). The first checkout that finds one broken replaces them all: the
    pool's own check would try the next broken one after 0 s, then 1 s, then 2 s, and a
    request would outwait the pool timeout (1.5 s here) and get a 503."""
    store = open_store(postgres_url, pool_min=6, pool_max=8, timeout_s=1.5)
    run(store.open())
    assert terminate_backends(urlsplit(postgres_url).path.lstrip("/")) >= 6

    async def pings() -> list[Any]:
        first = await asyncio.gather(store.ping(), return_exceptions=True)
        return first + await asyncio.gather(
            *(store.ping() for _ in range(8)), return_exceptions=True
        )

    assert run(pings()) == [None] * 9
    run(store.close())
