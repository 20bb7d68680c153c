"""`soul bench keys --keys N...`: one soul's key index at N keys, exact vs approximate, on
SQLite and PostgreSQL.

The soul is filled in bulk with N keys of random unit vectors (and their log entries). Each
row is measured in a fresh process (so its memory is its own): the time to its first answered
similarity lookup (the exact index reads every key; the approximate one loads the snapshot a
writer left and replays the log after it, where the writer then added ``TAIL`` keys), new-cue
and hit latency of ``resolve_similar``, the growth of resident memory, and recall@1 of cues made
near known keys (cosine ~0.95, so their true nearest key is known).

`soul bench probes --keys N...`: the approximate index itself (``build_approximate``, as a
replica builds it) over N such keys, searched with each number of lists probed: recall@1 and
the query's p50/p95 on one thread, the choice of ``catalog.index.probe``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from serve_app.bench.common import summarize, write_report

SOUL = "nova"
DIM = 384
CHUNK = 10_000  # key i's vector is row i % CHUNK of the chunk seeded i // CHUNK
TAIL = 1_000
QUERIES = 200
RECALL_QUERIES = 500
SEED_MS = 1_700_000_000_000  # the seeded log entries' time: long before the bench


def chunk_vectors(chunk: int) -> np.ndarray:
    v = np.random.default_rng(chunk).standard_normal((CHUNK, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def key_norm(i: int) -> str:
    return f"bench k{i}"  # normalized already: sorted tokens, no contrast words


def near(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    noise = rng.standard_normal(DIM).astype(np.float32)
    return 0.95 * v + 0.31 * noise / np.linalg.norm(noise)


def key_rows(n: int) -> Any:
    from serve_app.prompts import key_hash, pk_id

    for chunk in range((n + CHUNK - 1) // CHUNK):
        vectors = chunk_vectors(chunk)
        for j in range(min(CHUNK, n - chunk * CHUNK)):
            i = chunk * CHUNK + j
            norm = key_norm(i)
            yield pk_id(SOUL, norm), norm, key_hash(norm), vectors[j].tobytes(), i


def seq_of(i: int) -> str:
    from ulid import ULID

    return str(ULID.from_bytes((SEED_MS + i // 1000).to_bytes(6, "big") + i.to_bytes(10, "big")))


async def fill(dsn: str, n: int) -> None:
    """N keys and their log entries, in bulk (the store's own writes would take an hour)."""
    from serve_app.storage import open_store

    store = open_store(dsn)
    await store.open()  # creates the tables
    await store.close()
    if dsn.startswith("sqlite:///"):
        import sqlite3

        db = sqlite3.connect(dsn.removeprefix("sqlite:///"))
        with db:
            for pk, norm, digest, embed, i in key_rows(n):
                db.execute(
                    "INSERT INTO prompt_key (pk_id, soul_id, key_norm, key_hash, key_embed, "
                    "updated_at_ts) VALUES (?, ?, ?, ?, ?, ?)",
                    (pk, SOUL, norm, digest, embed, SEED_MS),
                )
                db.execute(
                    "INSERT INTO prompt_key_log (soul_id, seq, pk_id) VALUES (?, ?, ?)",
                    (SOUL, seq_of(i), pk),
                )
        db.close()
        return
    import psycopg

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        keys = "COPY prompt_key (pk_id, soul_id, key_norm, key_hash, key_embed, updated_at_ts) "
        with cur.copy(keys + "FROM STDIN") as copy:
            for pk, norm, digest, embed, _ in key_rows(n):
                copy.write_row((pk, SOUL, norm, digest, embed, SEED_MS))
        with cur.copy("COPY prompt_key_log (soul_id, seq, pk_id) FROM STDIN") as copy:
            for pk, _, _, _, i in key_rows(n):
                copy.write_row((SOUL, seq_of(i), pk))
        conn.commit()


def index_config(kind: str, n: int) -> Any:
    from serve_app.catalog.key_vectors import KeyIndexConfig

    if kind == "exact":
        return KeyIndexConfig(approximate_from=10**12)
    # Trained where a soul would cross the default switch point (or on all keys if fewer).
    return KeyIndexConfig(approximate_from=min(n, KeyIndexConfig().approximate_from))


def engine_for(dsn: str, objects_root: str, kind: str, n: int) -> Any:
    from deployments.catalog import CatalogConfig, CatalogEngine
    from serve_app.storage import open_store
    from serve_app.storage.local import LocalObjectStore, MediaSigner

    objects = LocalObjectStore(objects_root, MediaSigner(b"bench" * 8))
    config = CatalogConfig(index=index_config(kind, n))
    return CatalogEngine(open_store(dsn), config, objects if kind != "exact" else None)


async def write_snapshot(dsn: str, objects_root: str, n: int) -> float:
    """What a replica that built the approximate index leaves: a snapshot, then TAIL keys more."""
    engine = engine_for(dsn, objects_root, "approximate", n)
    await engine.store.open()
    t0 = time.perf_counter()
    await engine.indexes.get(SOUL)  # a build from the keys snapshots an approximate index
    await engine.indexes.flush()
    built_s = time.perf_counter() - t0
    rng = np.random.default_rng(7)
    for i in range(TAIL):
        await engine.resolve_similar(SOUL, f"bench tail{i}", rng.standard_normal(DIM).tolist())
    await engine.close()
    return built_s


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def measure(dsn: str, objects_root: str, kind: str, n: int) -> dict[str, Any]:
    from serve_app.prompts import pk_id

    rng = np.random.default_rng(11)
    picked = rng.choice(min(n, CHUNK), size=RECALL_QUERIES, replace=False)
    first = chunk_vectors(0)[picked]
    engine = engine_for(dsn, objects_root, kind, n)
    base = rss_mb()
    t0 = time.perf_counter()
    await engine.store.open()
    key, _ = await engine.resolve_similar(SOUL, f"bench {kind}q0", near(first[0], rng).tolist())
    ready_s = time.perf_counter() - t0
    assert key.pk_id == pk_id(SOUL, key_norm(int(picked[0])))

    async def timed(cues: list[tuple[str, np.ndarray]]) -> list[float]:
        latencies = []
        for cue, vector in cues:
            t = time.perf_counter()
            await engine.resolve_similar(SOUL, cue, vector.tolist())
            latencies.append(time.perf_counter() - t)
        return latencies

    hits = await timed([(f"bench {kind}q{j}", near(first[j], rng)) for j in range(1, QUERIES)])
    news = await timed(  # cues no earlier row created: new keys, not exact hits
        [(f"bench {kind}n{j}", rng.standard_normal(DIM).astype(np.float32)) for j in range(QUERIES)]
    )
    index = await engine.indexes.get(SOUL)
    found = [index.nearest(_unit(near(v, rng))) for v in first]
    expected = [pk_id(SOUL, key_norm(int(i))) for i in picked]
    recall = np.mean([f is not None and f[0] == e for f, e in zip(found, expected, strict=True)])
    rss = rss_mb() - base
    await engine.close()
    hit, new = summarize("hit", hits, 1), summarize("new", news, 1)
    return {
        "keys": n,
        "backend": dsn.split(":")[0],
        "index": kind if kind == "exact" else "approximate (snapshot + tail)",
        "ready_s": round(ready_s, 2),
        "new_key_p50_ms": new["p50_ms"],
        "new_key_p95_ms": new["p95_ms"],
        "hit_p50_ms": hit["p50_ms"],
        "rss_mb": round(rss, 1),
        "recall_at_1": round(float(recall), 4),
    }


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


def _measure_in_child(args: tuple[str, str, str, int]) -> dict[str, Any]:
    return asyncio.run(measure(*args))


def in_fresh_process(dsn: str, objects_root: str, kind: str, n: int) -> dict[str, Any]:
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        result: dict[str, Any] = pool.apply(_measure_in_child, ((dsn, objects_root, kind, n),))
        return result


def keys_main(ns: argparse.Namespace) -> int:
    from serve_app.storage.postgres import scratch_database

    rows: list[dict[str, Any]] = []
    builds: list[dict[str, Any]] = []
    for n in ns.keys:
        with (
            tempfile.TemporaryDirectory(prefix="soul-bench-keys-") as tmp,
            scratch_database(ns.postgres, "soul_bench") as pg_url,
        ):
            for dsn in (f"sqlite:///{Path(tmp) / 'keys.db'}", pg_url):
                objects_root = str(Path(tmp) / f"objects-{dsn.split(':')[0]}")
                t0 = time.perf_counter()
                asyncio.run(fill(dsn, n))
                filled_s = time.perf_counter() - t0
                rows.append(in_fresh_process(dsn, objects_root, "exact", n))
                built_s = asyncio.run(write_snapshot(dsn, objects_root, n))
                rows.append(in_fresh_process(dsn, objects_root, "approximate", n))
                builds.append(
                    {
                        "keys": n,
                        "backend": dsn.split(":")[0],
                        "fill_s": round(filled_s, 1),
                        "approximate_build_s": round(built_s, 1),
                    }
                )
                print_rows(rows[-2:])
    print("\nsoul bench keys")
    print_rows(rows)
    for b in builds:
        print(
            f"{b['backend']} {b['keys']} keys: filled in {b['fill_s']} s, approximate index built "
            f"from the keys (and snapshotted) in {b['approximate_build_s']} s"
        )
    write_report(ns, {"scenario": "keys", "rows": rows, "builds": builds})
    return 0


PROBES = (4, 8, 16, 24, 32, 64)


def probes_main(ns: argparse.Namespace) -> int:
    import faiss

    from serve_app.catalog.key_vectors import KeyIndexConfig, build_approximate

    faiss.omp_set_num_threads(1)  # one lookup of one replica, not a batch over every core
    rows = []
    for n in ns.keys:
        vectors = np.concatenate([chunk_vectors(c)[: n - c * CHUNK] for c in range(-(-n // CHUNK))])
        t0 = time.perf_counter()
        index = build_approximate(vectors, KeyIndexConfig())
        built_s = time.perf_counter() - t0
        rng = np.random.default_rng(11)
        picked = rng.choice(n, size=RECALL_QUERIES, replace=False)
        queries = [_unit(near(vectors[i], rng)) for i in picked]
        ivf = faiss.extract_index_ivf(index)
        for probe in PROBES:
            ivf.nprobe = probe
            latencies, found = [], 0
            for i, q in zip(picked, queries, strict=True):
                t = time.perf_counter()
                _, nearest = index.search(q.reshape(1, -1), 1)
                latencies.append(time.perf_counter() - t)
                found += int(nearest[0][0] == i)
            lookup = summarize("lookup", latencies, 1)
            rows.append({"keys": n, "lists": ivf.nlist, "probe": probe,
                         "recall_at_1": round(found / len(picked), 4),
                         "lookup_p50_ms": lookup["p50_ms"], "lookup_p95_ms": lookup["p95_ms"],
                         "built_s": round(built_s, 1)})  # fmt: skip
    print("\nsoul bench probes (IVF-SQ8, one thread)")
    print(f"{'keys':>8}{'lists':>7}{'probe':>7}{'recall@1':>10}{'p50 ms':>9}{'p95 ms':>9}")
    for r in rows:
        print(f"{r['keys']:>8}{r['lists']:>7}{r['probe']:>7}{r['recall_at_1']:>10.3f}"
              f"{r['lookup_p50_ms']:>9.3f}{r['lookup_p95_ms']:>9.3f}")  # fmt: skip
    write_report(ns, {"scenario": "probes", "rows": rows})
    return 0


def print_rows(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'keys':>8} {'backend':<11}{'index':<31}{'ready s':>8}{'new p50':>9}{'new p95':>9}"
        f"{'hit p50':>9}{'rss MB':>8}{'recall@1':>9}"
    )
    for r in rows:
        print(
            f"{r['keys']:>8} {r['backend']:<11}{r['index']:<31}{r['ready_s']:>8.2f}"
            f"{r['new_key_p50_ms']:>9.2f}{r['new_key_p95_ms']:>9.2f}{r['hit_p50_ms']:>9.2f}"
            f"{r['rss_mb']:>8.0f}{r['recall_at_1']:>9.3f}"
        )
