"""Each soul's key index: exact, then approximate past the switch point; snapshots in the
object store that a fresh replica loads before replaying the key log after them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deployments.catalog import CatalogConfig, CatalogEngine
from serve_app.catalog.key_vectors import KeyIndexConfig
from serve_app.catalog.souls import load_souls
from serve_app.ids import new_ulid
from serve_app.prompts import normalize, pk_id
from serve_app.storage import open_store
from serve_app.storage.local import LocalObjectStore, MediaSigner
from serve_app.storage.objects import ObjectStore
from tests.support import temporary_database

SOUL = "nova"
SNAPSHOT = f"keyindex/{SOUL}/snapshot.npz"
SMALL = KeyIndexConfig(approximate_from=40, lists=2, probe=2, snapshot_every=10**6)


def vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def near(v: np.ndarray, seed: int) -> list[float]:
    """A vector at cosine ~0.95 from ``v``."""
    noise = vectors(1, 1000 + seed)[0]
    return (0.95 * v + 0.31 * noise).tolist()


def norm(i: int) -> str:
    return normalize(f"thing k{i}", [])[0]  # no count word: "thing 3" and "thing 4" differ


class World:
    def __init__(self, tmp_path: Path, dsn: str = "") -> None:
        self.dsn = dsn or f"sqlite:///{tmp_path / 'catalog.db'}"
        self.objects = LocalObjectStore(str(tmp_path / "objects"), MediaSigner(b"k" * 32))
        self.souls = load_souls("config/souls.yaml")
        self.engines: list[CatalogEngine] = []

    async def engine(
        self, index: KeyIndexConfig = SMALL, objects: ObjectStore | bool | None = True
    ) -> CatalogEngine:
        store = self.objects if objects is True else (objects or None)
        engine = CatalogEngine(open_store(self.dsn), CatalogConfig(index=index), store)
        await engine.start(self.souls)
        self.engines.append(engine)
        return engine

    async def close(self) -> None:
        for engine in self.engines:
            await engine.close()


def scenario(tmp_path: Path, body: Any, dsn: str = "") -> None:
    async def main() -> None:
        world = World(tmp_path, dsn)
        try:
            await body(world)
        finally:
            await world.close()

    asyncio.run(main())


async def create_keys(engine: CatalogEngine, vs: np.ndarray, start: int = 0) -> None:
    for i, v in enumerate(vs, start):
        key, _ = await engine.resolve_similar(SOUL, norm(i), v.tolist())
        assert key.pk_id == pk_id(SOUL, norm(i))  # random vectors: every one is a new key


async def finds_every_key(engine: CatalogEngine, vs: np.ndarray) -> list[str]:
    """Resolve a cue near each key: the key found for each (a reuse, scored exactly)."""
    found = []
    for i, v in enumerate(vs):
        key, score = await engine.resolve_similar(SOUL, norm(10_000 + i), near(v, i))
        assert score is not None
        assert score == pytest.approx(float(np.dot(as_unit(near(v, i)), v)), abs=1e-5)
        found.append(key.pk_id)
    return found


def as_unit(v: list[float]) -> np.ndarray:
    a = np.asarray(v, dtype=np.float32)
    return a / np.linalg.norm(a)


def no_scans(engine: CatalogEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    async def refuse(*args: Any) -> None:
        pytest.fail("a replica with a snapshot read every key of the soul")

    monkeypatch.setattr(engine.store, "key_vectors_page", refuse)


def test_an_index_turns_approximate_past_the_switch_point_and_still_finds_its_keys(
    tmp_path: Path,
) -> None:
    async def body(world: World) -> None:
        engine = await world.engine(objects=False)
        vs = vectors(60)
        await create_keys(engine, vs[:39])
        assert (await engine.indexes.get(SOUL)).exact
        await create_keys(engine, vs[39:], start=39)
        index = await engine.indexes.get(SOUL)
        assert not index.exact and len(index) == 60
        assert await finds_every_key(engine, vs) == [pk_id(SOUL, norm(i)) for i in range(60)]

    scenario(tmp_path, body)


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""  # the world's own file
        return
    with temporary_database() as url:
        yield url


def test_snapshot_and_tail_replay_equal_a_full_build(
    tmp_path: Path, dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(world: World) -> None:
        writer = await world.engine()
        vs = vectors(70)
        await create_keys(writer, vs[:60])
        assert await writer.indexes.write_snapshot(await writer.indexes.get(SOUL))
        await create_keys(writer, vs[60:], start=60)  # the tail: only in the log

        loaded = await world.engine()
        no_scans(loaded, monkeypatch)
        built = await world.engine(objects=False)
        from_snapshot, from_keys = await loaded.indexes.get(SOUL), await built.indexes.get(SOUL)
        assert not from_snapshot.exact and len(from_snapshot) == len(from_keys) == 70
        expected = [pk_id(SOUL, norm(i)) for i in range(70)]
        assert await finds_every_key(loaded, vs) == await finds_every_key(built, vs) == expected

    scenario(tmp_path, body, dsn)


@pytest.mark.parametrize("loss", ["deleted", "damaged", "another embedding"])
def test_a_lost_snapshot_costs_a_build_from_the_keys(tmp_path: Path, loss: str) -> None:
    async def body(world: World) -> None:
        writer = await world.engine()
        vs = vectors(50)
        await create_keys(writer, vs)
        assert await writer.indexes.write_snapshot(await writer.indexes.get(SOUL))
        config = SMALL
        if loss == "deleted":
            world.objects.delete(SNAPSHOT)
        elif loss == "damaged":
            data = bytearray(world.objects.get(SNAPSHOT))
            data[len(data) // 2] ^= 0xFF
            world.objects.put(SNAPSHOT, bytes(data))
        else:
            config = SMALL.model_copy(update={"embedding_id": "another-embedder:cue-tokens"})
        fresh = await world.engine(config)
        assert len(await fresh.indexes.get(SOUL)) == 50
        assert await finds_every_key(fresh, vs) == [pk_id(SOUL, norm(i)) for i in range(50)]

    scenario(tmp_path, body)


def test_a_large_soul_is_snapshotted_as_it_grows(tmp_path: Path) -> None:
    async def body(world: World) -> None:
        engine = await world.engine(SMALL.model_copy(update={"snapshot_every": 15}))
        await create_keys(engine, vectors(40))  # turns approximate: snapshot the whole index
        await engine.indexes.flush()  # the snapshot is written in the background
        assert world.objects.exists(SNAPSHOT)
        first = world.objects.get(SNAPSHOT)
        await create_keys(engine, vectors(15, seed=1), start=40)
        await engine.indexes.flush()
        assert world.objects.get(SNAPSHOT) != first

    scenario(tmp_path, body)


def test_a_key_logged_twice_is_indexed_once(tmp_path: Path) -> None:
    """A create retried after its log write keeps both entries: one key, one row."""

    async def body(world: World) -> None:
        writer = await world.engine(objects=False)
        reader = await world.engine(objects=False)
        index = await reader.indexes.get(SOUL)  # built before the keys exist
        vs = vectors(2)
        await create_keys(writer, vs)
        await writer.store.log_prompt_key(SOUL, new_ulid(), pk_id(SOUL, norm(0)))
        assert await reader.indexes.catch_up(index) == 2
        assert len(index) == 2

    scenario(tmp_path, body)


def rotated(vs: np.ndarray) -> np.ndarray:
    """The same keys as another embedder would place them: rotated, so no old vector is near
    its new one."""
    q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((384, 384)))
    return (vs @ q.T).astype(np.float32)


@pytest.mark.parametrize("kind", ["exact", "approximate"])
def test_rewritten_keys_are_swapped_into_every_replica_without_a_pause(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def body(world: World) -> None:
        config = SMALL if kind == "approximate" else KeyIndexConfig()
        rebuilder, other = await world.engine(config), await world.engine(config)
        vs, expected = vectors(50), [pk_id(SOUL, norm(i)) for i in range(50)]
        await create_keys(rebuilder, vs)
        served = await other.indexes.get(SOUL)
        ws = rotated(vs)
        await rebuilder.rewrite_keys(
            [(pk_id(SOUL, norm(i)), norm(i), w.tolist()) for i, w in enumerate(ws)]
        )
        assert await rebuilder.swap_key_index(SOUL) == {"index": kind, "index_keys": 50}
        assert await finds_every_key(rebuilder, ws) == expected

        # The other replica learns of the rebuild from the log and builds in the background
        # (held at its first page here), answering from its current index meanwhile.
        release, original = asyncio.Event(), other.store.key_vectors_page

        async def held_page(*args: Any) -> Any:
            await release.wait()
            return await original(*args)

        monkeypatch.setattr(other.store, "key_vectors_page", held_page)
        await other.indexes.catch_up(served)
        assert await asyncio.wait_for(other.indexes.get(SOUL), 1) is served
        key, _ = await asyncio.wait_for(other.resolve_similar(SOUL, norm(3), ws[3].tolist()), 1)
        assert key.pk_id == expected[3]
        release.set()
        await other.indexes.flush()
        assert await other.indexes.get(SOUL) is not served
        assert await finds_every_key(other, ws) == expected

        await rebuilder.indexes.flush()  # the rebuilt approximate index is snapshotted
        fresh = await world.engine(config)
        assert await finds_every_key(fresh, ws) == expected

    scenario(tmp_path, body)


def test_a_stale_snapshot_is_replaced_by_a_build(tmp_path: Path) -> None:
    """A snapshot written before a rebuild: the fresh replica replays the rebuild's marker."""

    async def body(world: World) -> None:
        rebuilder = await world.engine(objects=False)
        writer = await world.engine()
        vs, expected = vectors(50), [pk_id(SOUL, norm(i)) for i in range(50)]
        await create_keys(writer, vs)
        assert await writer.indexes.write_snapshot(await writer.indexes.get(SOUL))
        ws = rotated(vs)
        await rebuilder.rewrite_keys(
            [(pk_id(SOUL, norm(i)), norm(i), w.tolist()) for i, w in enumerate(ws)]
        )
        await rebuilder.swap_key_index(SOUL)
        fresh = await world.engine()
        await fresh.indexes.catch_up(await fresh.indexes.get(SOUL))
        await fresh.indexes.flush()
        assert await finds_every_key(fresh, ws) == expected

    scenario(tmp_path, body)
