"""The catalog's ``Store``: one set of single-row SQL statements; each backend (SQLite, PostgreSQL)
only says how to run a statement and how it fails, in a module of its own, chosen by DSN.

Every hot path is a primary-key read (or a primary-key prefix scan) and every write is a
single-row, idempotent, last-write-wins upsert: no cross-row transactions, no joins.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from serve_app.errors import ServiceError
from serve_app.prompts import key_hash, soul_prefix_bounds
from serve_app.schemas import PromptKey, Soul, StyleProfile, Variant, VariantCost
from serve_app.settings import Settings
from serve_app.storage.jobs import JobRows

Row = Mapping[str, Any]


class StoreUnavailable(ServiceError):
    """The catalog database cannot be reached; nothing was changed, the client retries later."""

    status_code = 503
    retry_after_s = 2
    public_detail = "catalog store unavailable; nothing was changed, retry shortly"


def open_store(dsn: str, *, pool_min: int = 1, pool_max: int = 10, timeout_s: float = 5.0) -> Store:
    """The backend the DSN's scheme names (imported only when chosen)."""
    if dsn.startswith("sqlite:///"):
        from serve_app.storage.sqlite import SQLiteStore

        return SQLiteStore(Path(dsn.removeprefix("sqlite:///")))
    if dsn.startswith(("postgresql://", "postgres://")):
        from serve_app.storage.postgres import PostgresStore

        return PostgresStore(dsn, pool_min=pool_min, pool_max=pool_max, timeout_s=timeout_s)
    raise ValueError(
        f"unsupported catalog DSN {dsn.split('://')[0]!r}: "
        "use sqlite:///path.db or postgresql://user@host:port/db"
    )


def store_for(settings: Settings) -> Store:
    return open_store(
        settings.resolved_database_url,
        pool_min=settings.database_pool_min,
        pool_max=settings.database_pool_max,
        timeout_s=settings.database_timeout_s,
    )


def lww_upsert_sql(table: str, columns: list[str], keys: list[str], tiebreak: str) -> str:
    """A single-row upsert that only wins when newer; equal timestamps fall to ``tiebreak``."""
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in keys)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates} "
        f"WHERE excluded.updated_at_ts > {table}.updated_at_ts OR "
        f"(excluded.updated_at_ts = {table}.updated_at_ts "
        f"AND excluded.{tiebreak} > {table}.{tiebreak})"
    )


_STYLE_COLUMNS = [
    "soul_id",
    "base_model_ref",
    "lora_ids_json",
    "palette_json",
    "negatives_json",
    "motion_module",
    "extra_json",
    "updated_at_ts",
]
_KEY_COLUMNS = [
    "pk_id",
    "soul_id",
    "key_norm",
    "key_hash",
    "key_embed",
    "meta_json",
    "updated_at_ts",
]
_COST_COLUMNS = ["cost_day", "render_s", "animate_s", "encode_s", "cost_usd"]
_VARIANT_COLUMNS = [
    "pk_id",
    "variant_id",
    "soul_id",
    "asset_url",
    "storage_key",
    "seed",
    "phash",
    "image_embed",
    "meta_json",
    *_COST_COLUMNS,
    "updated_at_ts",
]
_UPSERT_SOUL = lww_upsert_sql(
    "soul", ["soul_id", "display_name", "updated_at_ts"], ["soul_id"], "display_name"
)
_UPSERT_STYLE = lww_upsert_sql("soul_style_profile", _STYLE_COLUMNS, ["soul_id"], "extra_json")
_UPSERT_KEY = lww_upsert_sql("prompt_key", _KEY_COLUMNS, ["pk_id"], "key_norm")
_UPSERT_VARIANT = lww_upsert_sql(
    "variant", _VARIANT_COLUMNS, ["pk_id", "variant_id"], "storage_key"
)
# Taken when free, expired, or already ours (a renewal); RETURNING tells whether we hold it.
_TRY_LOCK = (
    "INSERT INTO work_lock (lock_key, owner_id, expires_at_ts, updated_at_ts) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (lock_key) DO UPDATE SET owner_id = excluded.owner_id, "
    "expires_at_ts = excluded.expires_at_ts, updated_at_ts = excluded.updated_at_ts "
    "WHERE work_lock.expires_at_ts <= excluded.updated_at_ts "
    "OR work_lock.owner_id = excluded.owner_id RETURNING owner_id"
)

# A deleted style is a row with an empty base model (a tombstone); readers skip it.
_LIVE = "base_model_ref <> ''"
# A deleted variant is a row without objects (a tombstone): never listed, counted or claimed.
_LIVE_VARIANT = "storage_key <> ''"


def _style_row(style: StyleProfile) -> tuple[Any, ...]:
    extra = {**style.extra, "style_tags": style.style_tags}
    return (
        style.soul_id,
        style.base_model_ref,
        json.dumps(style.lora_ids),
        json.dumps(style.palette, sort_keys=True),
        json.dumps(style.negatives),
        style.motion_module,
        json.dumps(extra, sort_keys=True),
        style.updated_at_ts,
    )


def _style_tombstone(soul_id: str, ts: int) -> tuple[Any, ...]:
    return (soul_id, "", "[]", "{}", "[]", None, '{"deleted": true}', ts)


def _style_from(row: Row) -> StyleProfile:
    extra = json.loads(row["extra_json"])
    return StyleProfile(
        soul_id=row["soul_id"],
        base_model_ref=row["base_model_ref"],
        lora_ids=json.loads(row["lora_ids_json"]),
        palette=json.loads(row["palette_json"]),
        negatives=json.loads(row["negatives_json"]),
        motion_module=row["motion_module"],
        style_tags=extra.pop("style_tags", []),
        extra=extra,
        updated_at_ts=row["updated_at_ts"],
    )


def _key_from(row: Row) -> PromptKey:
    return PromptKey(
        pk_id=row["pk_id"],
        soul_id=row["soul_id"],
        key_norm=row["key_norm"],
        key_hash=row["key_hash"],
        key_embed=row["key_embed"],
        meta=json.loads(row["meta_json"]),
        updated_at_ts=row["updated_at_ts"],
    )


def _variant_from(row: Row) -> Variant:
    return Variant(
        variant_id=row["variant_id"],
        pk_id=row["pk_id"],
        soul_id=row["soul_id"],
        asset_url=row["asset_url"],
        storage_key=row["storage_key"],
        seed=row["seed"],
        phash=row["phash"],
        image_embed=row["image_embed"],
        meta=json.loads(row["meta_json"]),
        cost=_cost_from(row),
        updated_at_ts=row["updated_at_ts"],
    )


def _cost_from(row: Row) -> VariantCost | None:
    if row["cost_day"] is None:  # made before costs were recorded
        return None
    return VariantCost(
        day=row["cost_day"],
        render_s=row["render_s"],
        animate_s=row["animate_s"],
        encode_s=row["encode_s"],
        usd=row["cost_usd"],
    )


def _cost_row(cost: VariantCost | None) -> tuple[Any, ...]:
    if cost is None:
        return (None,) * len(_COST_COLUMNS)
    return (cost.day, cost.render_s, cost.animate_s, cost.encode_s, cost.usd)


class Store(JobRows, ABC):
    """The catalog's statements, written once with ``?`` placeholders; a backend runs them.

    JSON columns travel as text in both backends. Timestamps come from the caller (the catalog
    stamps every write with one clock, ``serve_app.ids.now_ms``).
    """

    @abstractmethod
    async def open(self) -> None:
        """Connect and apply the schema (idempotent)."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Run a statement that returns rows (SELECT, or a write with RETURNING)."""

    @abstractmethod
    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement that returns no rows; the number of rows it changed."""

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    async def ping(self) -> None:
        await self._rows("SELECT 1 AS ok")

    # Souls and styles.
    async def upsert_soul(self, soul: Soul, ts: int) -> None:
        await self._write(_UPSERT_SOUL, (soul.soul_id, soul.display_name, ts))

    async def get_soul(self, soul_id: str) -> Soul | None:
        row = await self._row(
            "SELECT soul_id, display_name FROM soul WHERE soul_id = ?", (soul_id,)
        )
        return Soul(soul_id=row["soul_id"], display_name=row["display_name"]) if row else None

    async def get_style(self, soul_id: str) -> StyleProfile | None:
        row = await self._row(
            f"SELECT * FROM soul_style_profile WHERE soul_id = ? AND {_LIVE}", (soul_id,)
        )
        return _style_from(row) if row else None

    async def list_styles(self) -> list[StyleProfile]:
        rows = await self._rows(f"SELECT * FROM soul_style_profile WHERE {_LIVE} ORDER BY soul_id")
        return [_style_from(r) for r in rows]

    async def upsert_style(self, style: StyleProfile) -> None:
        await self._write(_UPSERT_STYLE, _style_row(style))

    async def insert_style_if_absent(self, style: StyleProfile) -> None:
        cols = ", ".join(_STYLE_COLUMNS)
        marks = ", ".join("?" for _ in _STYLE_COLUMNS)
        await self._write(
            f"INSERT INTO soul_style_profile ({cols}) VALUES ({marks}) ON CONFLICT DO NOTHING",
            _style_row(style),
        )

    async def delete_style(self, soul_id: str, ts: int) -> bool:
        """A tombstone written like any other LWW row, so an older write cannot resurrect it;
        nothing is written when there is no live style (an unknown soul writes no row)."""
        if await self.get_style(soul_id) is None:
            return False
        return await self._write(_UPSERT_STYLE, _style_tombstone(soul_id, ts)) > 0

    # Prompt keys.
    async def get_prompt_key(self, pk_id: str) -> PromptKey | None:
        row = await self._row("SELECT * FROM prompt_key WHERE pk_id = ?", (pk_id,))
        return _key_from(row) if row else None

    async def prompt_keys_page(self, soul_id: str, after: str, limit: int) -> list[PromptKey]:
        """A page of the soul's keys in key order, after ``after`` (a primary-key range)."""
        low, high = soul_prefix_bounds(soul_id)
        rows = await self._rows(
            "SELECT * FROM prompt_key WHERE pk_id >= ? AND pk_id > ? AND pk_id < ? "
            "ORDER BY pk_id LIMIT ?",
            (low, after, high, limit),
        )
        return [_key_from(r) for r in rows]

    async def key_vectors_page(
        self, soul_id: str, after: str, limit: int
    ) -> list[tuple[str, bytes]]:
        """``prompt_keys_page`` narrowed to what an index is built from: (pk_id, embedding),
        the embedding empty for a key without one."""
        low, high = soul_prefix_bounds(soul_id)
        rows = await self._rows(
            "SELECT pk_id, key_embed FROM prompt_key WHERE pk_id >= ? AND pk_id > ? AND pk_id < ? "
            "ORDER BY pk_id LIMIT ?",
            (low, after, high, limit),
        )
        return [(r["pk_id"], bytes(r["key_embed"] or b"")) for r in rows]

    async def key_texts_page(
        self, soul_id: str, after: str, limit: int
    ) -> list[tuple[str, str, bool]]:
        """``prompt_keys_page`` narrowed to what a rebuild reads: (pk_id, key_norm, whether the
        key has an embedding)."""
        low, high = soul_prefix_bounds(soul_id)
        rows = await self._rows(
            "SELECT pk_id, key_norm, key_embed IS NOT NULL AS embedded FROM prompt_key "
            "WHERE pk_id >= ? AND pk_id > ? AND pk_id < ? ORDER BY pk_id LIMIT ?",
            (low, after, high, limit),
        )
        return [(r["pk_id"], r["key_norm"], bool(r["embedded"])) for r in rows]

    async def count_prompt_keys(self, soul_id: str) -> int:
        """The soul's keys, counted over a primary-key range."""
        low, high = soul_prefix_bounds(soul_id)
        rows = await self._rows(
            "SELECT count(*) AS n FROM prompt_key WHERE pk_id >= ? AND pk_id < ?", (low, high)
        )
        return int(rows[0]["n"])

    async def rewrite_prompt_key(self, pk_id: str, key_norm: str, embed: bytes, ts: int) -> bool:
        """A key's text and embedding recomputed (its id, meta and variants stay): one row by
        its primary key, unless a later write stands."""
        changed = await self._write(
            "UPDATE prompt_key SET key_norm = ?, key_hash = ?, key_embed = ?, updated_at_ts = ? "
            "WHERE pk_id = ? AND updated_at_ts <= ?",
            (key_norm, key_hash(key_norm), embed, ts, pk_id, ts),
        )
        return changed > 0

    async def count_variants(self, pk_id: str) -> int:
        rows = await self._rows(
            f"SELECT count(*) AS n FROM variant WHERE pk_id = ? AND {_LIVE_VARIANT}", (pk_id,)
        )
        return int(rows[0]["n"])

    async def log_prompt_key(self, soul_id: str, seq: str, pk_id: str) -> None:
        """Append to the soul's log of keys with embeddings (``seq``: a ULID), from which other
        catalog replicas learn of them."""
        await self._write(
            "INSERT INTO prompt_key_log (soul_id, seq, pk_id) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            (soul_id, seq, pk_id),
        )

    async def prompt_key_log_after(self, soul_id: str, after: str, limit: int) -> list[Row]:
        """The soul's log entries (``seq``, ``pk_id``) after ``after``, oldest first: a range of
        the primary key."""
        return await self._rows(
            "SELECT seq, pk_id FROM prompt_key_log WHERE soul_id = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (soul_id, after, limit),
        )

    async def upsert_prompt_key(self, key: PromptKey) -> None:
        await self._write(
            _UPSERT_KEY,
            (
                key.pk_id,
                key.soul_id,
                key.key_norm,
                key.key_hash,
                key.key_embed,
                json.dumps(key.meta, sort_keys=True),
                key.updated_at_ts,
            ),
        )

    # Variants and user-unique delivery.
    async def list_variants(self, pk_id: str) -> list[Variant]:
        rows = await self._rows(
            f"SELECT * FROM variant WHERE pk_id = ? AND {_LIVE_VARIANT} ORDER BY variant_id",
            (pk_id,),
        )
        return [_variant_from(r) for r in rows]

    async def upsert_variant(self, variant: Variant) -> None:
        await self._write(
            _UPSERT_VARIANT,
            (
                variant.pk_id,
                variant.variant_id,
                variant.soul_id,
                variant.asset_url,
                variant.storage_key,
                variant.seed,
                variant.phash,
                variant.image_embed,
                json.dumps(variant.meta, sort_keys=True),
                *_cost_row(variant.cost),
                variant.updated_at_ts,
            ),
        )

    async def seen_among(self, user_id: str, variant_ids: list[str]) -> set[str]:
        if not variant_ids:
            return set()
        marks = ", ".join("?" for _ in variant_ids)
        rows = await self._rows(
            f"SELECT variant_id FROM user_seen WHERE user_id = ? AND variant_id IN ({marks})",
            (user_id, *variant_ids),
        )
        return {r["variant_id"] for r in rows}

    async def claim(
        self, user_id: str, variant_id: str, ts: int, pk_id: str = "", via: str = ""
    ) -> bool:
        """True only for the one request whose insert created the row; False too once the
        variant is a tombstone, so a claim made after its delete never delivers it. ``via``
        names the job item the claim was made for (empty for a synchronous request)."""
        row = await self._row(
            "INSERT INTO user_seen (user_id, variant_id, seen_at_ts, pk_id, via) "
            "SELECT ?, ?, ?, ?, ? WHERE NOT EXISTS (SELECT 1 FROM variant WHERE pk_id = ? "
            f"AND variant_id = ? AND NOT ({_LIVE_VARIANT})) "
            "ON CONFLICT DO NOTHING RETURNING variant_id",
            (user_id, variant_id, ts, pk_id, via, pk_id, variant_id),
        )
        return row is not None

    async def seen_page(self, user_id: str, before: str, limit: int) -> list[Row]:
        """What the user was sent (``pk_id``, ``variant_id``, ``seen_at_ts``), newest variant
        first, below ``before`` (a variant id; empty: from the newest): a backward range of the
        primary key."""
        return await self._rows(
            "SELECT pk_id, variant_id, seen_at_ts FROM user_seen WHERE user_id = ? "
            "AND variant_id < ? ORDER BY variant_id DESC LIMIT ?",
            (user_id, before or "~", limit),  # "~" sorts after every ULID
        )

    async def claimed_via(self, user_id: str, via: str) -> tuple[str, str] | None:
        """(pk_id, variant_id) a job item already claimed for the user: a prefix scan of the
        user's history, run only when a job item is retried."""
        row = await self._row(
            "SELECT pk_id, variant_id FROM user_seen WHERE user_id = ? AND via = ?",
            (user_id, via),
        )
        return (row["pk_id"], row["variant_id"]) if row else None

    async def get_variant(self, pk_id: str, variant_id: str) -> Variant | None:
        """The variant's row, a tombstone included (``Variant.deleted``)."""
        row = await self._row(
            "SELECT * FROM variant WHERE pk_id = ? AND variant_id = ?", (pk_id, variant_id)
        )
        return _variant_from(row) if row else None

    async def find_variant(self, variant_id: str) -> Variant | None:
        """A variant by its id alone (the ``variant_by_id`` index), a tombstone included."""
        row = await self._row("SELECT * FROM variant WHERE variant_id = ?", (variant_id,))
        return _variant_from(row) if row else None

    async def delete_variant(self, variant: Variant, ts: int) -> bool:
        """Its tombstone, written like any LWW row, so an older write (a retried create)
        cannot bring it back; it keeps what the variant cost. False: a newer write is there."""
        tombstone = (variant.pk_id, variant.variant_id, variant.soul_id, "", "", None, None, None)
        spent = _cost_row(variant.cost)
        return await self._write(_UPSERT_VARIANT, (*tombstone, "{}", *spent, ts)) > 0

    # What variants cost (the cost columns of their rows, tombstones included: it was spent).
    async def day_cost_usd(self, day: str) -> float:
        row = await self._row(
            "SELECT COALESCE(SUM(cost_usd), 0) AS usd FROM variant WHERE cost_day = ?", (day,)
        )
        return float(row["usd"]) if row else 0.0

    async def cost_by_day(self, since: str) -> list[Row]:
        """Per UTC day from ``since`` (YYYY-MM-DD) and soul: variants made, seconds, dollars."""
        return await self._rows(
            "SELECT cost_day, soul_id, COUNT(*) AS variants, SUM(render_s) AS render_s, "
            "SUM(animate_s) AS animate_s, SUM(encode_s) AS encode_s, SUM(cost_usd) AS usd "
            "FROM variant WHERE cost_day >= ? GROUP BY cost_day, soul_id "
            "ORDER BY cost_day, soul_id",
            (since,),
        )

    # Selfie places: which landmarks of a city a user had (a primary-key prefix read).
    async def landmarks_used(
        self, soul_id: str, city_key: str, user_id: str
    ) -> dict[str, tuple[int, str]]:
        """landmark_key -> (used_at_ts, angle_key) for this soul, city and user."""
        rows = await self._rows(
            "SELECT landmark_key, used_at_ts, angle_key FROM landmark_log "
            "WHERE soul_id = ? AND city_key = ? AND user_id = ?",
            (soul_id, city_key, user_id),
        )
        return {r["landmark_key"]: (r["used_at_ts"], r["angle_key"]) for r in rows}

    async def take_landmark(
        self,
        soul_id: str,
        city_key: str,
        user_id: str,
        landmark_key: str,
        angle_key: str,
        ts: int,
        if_ts: int | None,
    ) -> bool:
        """Log a shot, one row: a landmark new to the user (``if_ts`` None) is inserted only if
        still absent; a repeat overwrites only the version read (``used_at_ts == if_ts``). False:
        a concurrent request took it first."""
        key = (soul_id, city_key, user_id, landmark_key)
        if if_ts is None:
            row = await self._row(
                "INSERT INTO landmark_log (soul_id, city_key, user_id, landmark_key, used_at_ts, "
                "angle_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING used_at_ts",
                (*key, ts, angle_key),
            )
            return row is not None
        changed = await self._write(
            "UPDATE landmark_log SET used_at_ts = ?, angle_key = ? WHERE soul_id = ? AND "
            "city_key = ? AND user_id = ? AND landmark_key = ? AND used_at_ts = ?",
            (ts, angle_key, *key, if_ts),
        )
        return changed > 0

    # Best-effort locks with a TTL (work shared across replicas).
    async def try_lock(self, lock_key: str, owner_id: str, ts: int, ttl_ms: int) -> bool:
        """Take or renew ``lock_key`` until ``ts + ttl_ms``; False while another owner holds it."""
        row = await self._row(_TRY_LOCK, (lock_key, owner_id, ts + ttl_ms, ts))
        return row is not None

    async def get_lock(self, lock_key: str) -> Row | None:
        return await self._row(
            "SELECT owner_id, expires_at_ts FROM work_lock WHERE lock_key = ?", (lock_key,)
        )

    async def take_over_lock(
        self, lock_key: str, from_owner: str, owner_id: str, ts: int, ttl_ms: int
    ) -> bool:
        """Take a lock from the owner read (only if it still holds it), before its TTL."""
        changed = await self._write(
            "UPDATE work_lock SET owner_id = ?, expires_at_ts = ?, updated_at_ts = ? "
            "WHERE lock_key = ? AND owner_id = ?",
            (owner_id, ts + ttl_ms, ts, lock_key, from_owner),
        )
        return changed > 0

    async def live_locks(self, prefix: str, ts: int) -> list[str]:
        """Owners of the unexpired locks whose key starts with ``prefix`` (a key prefix scan)."""
        rows = await self._rows(
            "SELECT owner_id FROM work_lock WHERE lock_key >= ? AND lock_key < ? "
            "AND expires_at_ts > ?",
            (prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1), ts),
        )
        return [r["owner_id"] for r in rows]

    async def unlock(self, lock_key: str, owner_id: str) -> None:
        await self._write(
            "DELETE FROM work_lock WHERE lock_key = ? AND owner_id = ?", (lock_key, owner_id)
        )

    async def locks_after(self, after: str, limit: int) -> list[Row]:
        """A page of every lock, in key order (the sweeper's walk)."""
        return await self._rows(
            "SELECT lock_key, owner_id, expires_at_ts FROM work_lock WHERE lock_key > ? "
            "ORDER BY lock_key LIMIT ?",
            (after, limit),
        )

    async def drop_expired_lock(self, lock_key: str, owner_id: str, expires_at_ts: int) -> int:
        """Only the version read: a lock renewed or taken since stays."""
        return await self._write(
            "DELETE FROM work_lock WHERE lock_key = ? AND owner_id = ? AND expires_at_ts = ?",
            (lock_key, owner_id, expires_at_ts),
        )

    async def idempotency_after(self, after: str, limit: int) -> list[Row]:
        return await self._rows(
            "SELECT idem_key, result_json, updated_at_ts FROM idempotency WHERE idem_key > ? "
            "ORDER BY idem_key LIMIT ?",
            (after, limit),
        )

    # Idempotency records: compare-and-set on the row's timestamp, one row at a time.
    async def insert_idempotency(self, idem_key: str, record: str, ts: int) -> bool:
        row = await self._row(
            "INSERT INTO idempotency (idem_key, result_json, updated_at_ts) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING idem_key",
            (idem_key, record, ts),
        )
        return row is not None

    async def get_idempotency(self, idem_key: str) -> tuple[str, int] | None:
        row = await self._row(
            "SELECT result_json, updated_at_ts FROM idempotency WHERE idem_key = ?", (idem_key,)
        )
        return (row["result_json"], row["updated_at_ts"]) if row else None

    async def replace_idempotency(self, idem_key: str, record: str, ts: int, if_ts: int) -> bool:
        """Overwrite the record only if it is still the version stamped ``if_ts``."""
        changed = await self._write(
            "UPDATE idempotency SET result_json = ?, updated_at_ts = ? "
            "WHERE idem_key = ? AND updated_at_ts = ?",
            (record, ts, idem_key, if_ts),
        )
        return changed > 0

    async def delete_idempotency(self, idem_key: str, if_ts: int) -> int:
        return await self._write(
            "DELETE FROM idempotency WHERE idem_key = ? AND updated_at_ts = ?", (idem_key, if_ts)
        )
