"""Search of a project's assets by an uploaded image: the ranking over a small fixed set on both
backends (test_facets' store); the route over the real Catalog engine (SQLite) and the real
Dedupe engine with the tiny CLIP model: an upload checked as every upload is (a refused one
answers 4xx naming it and writes nothing), another client's project a 404; and the
asset_generate job keeping each image's embedding (the real engines, the tiny SDXL)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from deployments.catalog import CatalogEngine
from deployments.dedupe import DedupeConfig, DedupeEngine
from serve_app.api.deps import key_scope
from serve_app.catalog.asset_images import AssetImages
from serve_app.catalog.projects import Projects
from serve_app.diffusion.sources import ModelManager
from serve_app.diffusion.tiny import TINY_CLIP
from serve_app.errors import InvalidRequest
from serve_app.jobs.kinds.asset_generate import AssetGenerateJob
from serve_app.projects.image_search import frames_of
from serve_app.projects.models import AssetSpec, ProjectDraft, ProjectNotFound
from serve_app.projects.taxonomy import taxonomy_of
from serve_app.settings import ReferenceSettings, Settings
from serve_app.storage.sqlite import SQLiteStore
from serve_app.storage.tables import CatalogStore
from tests.support import run
from tests.unit.handles import LocalHandle
from tests.unit.ingress_app import ingress_client
from tests.unit.test_facets import alone, postgres_url, store  # noqa: F401 (fixtures)
from tests.unit.test_job_worker import Jobs
from tests.unit.test_store import (
    assert_uses_primary_key,
    query_plan,
    statements_of,
    write_analyzed,
)
from tests.unit.world import World

ME, OTHER = "client-a", "client-b"
MINE, THEIRS = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
KEY_A = key_scope("key-a")  # the owner the routes see for MINE


class Catalog(Projects, AssetImages):
    """The two facets as the Catalog mixes them."""


@pytest.fixture
def catalog(store: CatalogStore) -> Catalog:  # noqa: F811 (test_facets' fixture)
    return alone(Catalog, store)


def unit(angle_deg: float) -> bytes:
    v = np.zeros(8, dtype=np.float16)
    v[0], v[1] = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return v.tobytes()


def asset(catalog: Catalog, pid: str, name: str, kind: str = "prop", **more: Any) -> str:
    spec = AssetSpec.model_validate(
        {"asset_type": kind, "name": name, "canonical_prompt": name, **more}
    )
    return run(catalog.create_asset(ME, pid, spec, ["front", "wide"], None))[0].asset_id


def test_assets_rank_by_their_latest_images_inside_one_project_only(catalog: Catalog) -> None:
    pid = run(catalog.create_project(ME, ProjectDraft(name="P"))).project_id
    near, far, bare = (asset(catalog, pid, n) for n in ("near", "far", "bare"))
    tagged = asset(catalog, pid, "tagged", "environment", tags=["coast"], taxonomy={"era": "1920s"})
    keep = catalog.add_asset_image_embed
    run(keep(ME, pid, near, 1, "front", "clip", unit(80)))
    run(keep(ME, pid, near, 1, "wide", "clip", unit(5)))  # its best image decides
    run(keep(ME, pid, far, 1, "front", "clip", unit(60)))
    run(keep(ME, pid, far, 1, "wide", "other-model", unit(0)))  # another model: never compared
    run(keep(ME, pid, tagged, 1, "front", "clip", unit(30)))
    found = run(catalog.search_assets_by_image(ME, pid, unit(0), "clip", None, [], 0, 10))
    assert [a.asset_id for a, _, _ in found] == [near, tagged, far, bare]
    scores = [s for _, _, s in found]
    assert scores[0] == pytest.approx(np.cos(np.radians(5)), abs=1e-3) and scores[-1] is None
    # A newer version's images stand for the asset once it has them.
    run(catalog.store.put_asset_image_embed(pid, far, 2, "front", "clip", unit(1), 0))
    found = run(catalog.search_assets_by_image(ME, pid, unit(0), "clip", None, [], 0, 2))
    assert [a.asset_id for a, _, _ in found] == [far, near]
    only = run(catalog.search_assets_by_image(ME, pid, unit(0), "clip", "environment", [], 0, 9))
    assert [a.asset_id for a, _, _ in only] == [tagged]
    assert run(catalog.search_assets_by_image(ME, pid, unit(0), "clip", None, ["x"], 0, 9)) == []
    classed = catalog.search_assets_by_image(
        ME, pid, unit(0), "clip", None, [], 0, 9, {"era": "1920s"}
    )
    assert [a.asset_id for a, _, _ in run(classed)] == [tagged]
    other = run(catalog.create_project(OTHER, ProjectDraft(name="Q"))).project_id
    assert run(catalog.search_assets_by_image(OTHER, other, unit(0), "clip", None, [], 0, 9)) == []
    for call in (
        catalog.search_assets_by_image(OTHER, pid, unit(0), "clip", None, [], 0, 9),
        catalog.add_asset_image_embed(OTHER, pid, near, 1, "front", "clip", unit(0)),
    ):
        with pytest.raises(ProjectNotFound, match="project_id"):
            run(call)


def test_a_projects_image_embeddings_are_one_primary_key_prefix(catalog: Catalog) -> None:
    """1,000 projects with 20 embeddings each, written in bulk and analyzed: reading one
    project's embeddings searches the primary key."""
    db = catalog.store
    rows = [
        (f"prj_{p:026d}", f"ast_{a:026d}", 1, role, "clip", unit(a), 1)
        for p in range(1000)
        for a in range(10)
        for role in ("front", "wide")
    ]
    sql = "INSERT INTO asset_image_embed VALUES (?, ?, ?, ?, ?, ?, ?)"
    write_analyzed(db, [(sql, rows)])
    pid = rows[500 * 20][0]
    for statement, params in statements_of(db, db.project_image_embeds(str(pid))):
        assert_uses_primary_key(db, query_plan(db, statement, params), "asset_image_embed")
    assert len(run(db.project_image_embeds(str(pid)))) == 20
    one = db.version_image_embeds(str(pid), rows[500 * 20][1], 1)
    for statement, params in statements_of(db, one):
        assert_uses_primary_key(db, query_plan(db, statement, params), "asset_image_embed")
    assert [role for role, _, _ in run(db.version_image_embeds(pid, rows[500 * 20][1], 1))] == [
        "front",
        "wide",
    ]


def png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def picture(seed: int, size: int = 64) -> np.ndarray:
    """A distinct picture: smooth colour blobs of its own."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


@pytest.fixture(scope="module")
def dedupe(models_dir: Path) -> DedupeEngine:
    return DedupeEngine(DedupeConfig(clip_model=TINY_CLIP), ModelManager(models_dir))


@pytest.fixture
def served(tmp_path: Path, dedupe: DedupeEngine) -> Iterator[tuple[TestClient, CatalogEngine]]:
    references = ReferenceSettings(reference_max_bytes=200_000, reference_max_pixels=128 * 128)
    settings = Settings(data_dir=tmp_path, references=references)
    engine = CatalogEngine(SQLiteStore(tmp_path / "catalog.db"))
    run(engine.start([]))
    with ingress_client(settings, engine, dedupe=LocalHandle(dedupe)) as made:
        yield made, engine
    run(engine.close())


def search(
    client: TestClient, pid: str, data: bytes, headers: dict[str, str] = MINE, **query: Any
) -> Any:
    return client.post(
        f"/v1/projects/{pid}/assets:searchByImage",
        params=query,
        files={"files": ("q.png", data, "image/png")},
        headers=headers,
    )


def test_an_upload_finds_the_asset_it_shows(
    served: tuple[TestClient, CatalogEngine], dedupe: DedupeEngine
) -> None:
    client, engine = served
    pid = run(engine.create_project(KEY_A, ProjectDraft(name="P"))).project_id
    ids = []
    for seed in range(3):
        taxonomy = {"era": "1920s", "role": "lead"} if seed == 2 else {"era": "1920s"}
        spec = AssetSpec(
            asset_type="prop", name=f"thing {seed}", canonical_prompt="a thing", taxonomy=taxonomy
        )
        made = run(engine.create_asset(KEY_A, pid, spec, ["front"], None))[0].asset_id
        embedded = dedupe.check(frames_of(png(picture(seed))), [])
        assert embedded.image_embed is not None and embedded.embed_model == TINY_CLIP
        keep = engine.add_asset_image_embed(
            KEY_A, pid, made, 1, "front", TINY_CLIP, embedded.image_embed
        )
        run(keep)
        ids.append(made)
    answer = search(client, pid, png(picture(1)))
    assert answer.status_code == 200, answer.text
    hits = answer.json()["hits"]
    assert hits[0]["asset_id"] == ids[1] and hits[0]["score"] == pytest.approx(1.0, abs=1e-2)
    assert {h["asset_id"] for h in hits} == set(ids) and hits[0]["version"]["version"] == 1
    paged = search(client, pid, png(picture(1)), limit=1, offset=1).json()
    assert len(paged["hits"]) == 1 and paged["next_offset"] == 2
    assert search(client, pid, png(picture(1)), asset_type="environment").json()["hits"] == []
    classed = search(client, pid, png(picture(1)), taxonomy="era:1920s,role:lead").json()
    assert [h["asset_id"] for h in classed["hits"]] == [ids[2]]
    assert search(client, pid, png(picture(1)), headers=THEIRS).status_code == 404


def test_a_refused_upload_names_it_and_writes_nothing(
    served: tuple[TestClient, CatalogEngine],
) -> None:
    client, engine = served
    pid = run(engine.create_project(KEY_A, ProjectDraft(name="P"))).project_id
    before = run(engine.project_events(KEY_A, pid, "", 100))
    for data, status, words in (
        (b"not an image at all", 422, "files[0]: not a PNG, JPEG, WebP or GIF"),
        (b"", 422, "files[0]: empty"),
        (png(picture(0, size=200)), 422, "pixel limit"),
        (b"\x89PNG" + bytes(300_000), 413, "byte limit"),
    ):
        answer = search(client, pid, data)
        assert answer.status_code == status and words in answer.json()["detail"], answer.text
    two = client.post(
        f"/v1/projects/{pid}/assets:searchByImage",
        files=[("files", ("a.png", png(picture(0)))), ("files", ("b.png", png(picture(1))))],
        headers=MINE,
    )
    assert two.status_code == 422, two.text
    bad_tag = search(client, pid, png(picture(0)), tags="ok," + "x" * 41)
    assert bad_tag.status_code == 422 and "tags" in bad_tag.json()["detail"]
    assert search(client, pid, png(picture(0)), asset_type="car").status_code == 422
    for taxonomy, words in (
        ("era", "taxonomy"),  # no value
        ("Era:1920s", "taxonomy"),
        ("era:1920s,era:1930s", "taxonomy: a key is given twice"),
        ("era:" + "x" * 65, "taxonomy"),
    ):
        bad = search(client, pid, png(picture(0)), taxonomy=taxonomy)
        assert bad.status_code == 422 and words in bad.json()["detail"], bad.text
    assert run(engine.project_events(KEY_A, pid, "", 100)) == before
    assert run(engine.store.project_image_embeds(pid)) == []


def test_without_an_image_model_a_search_by_image_says_so(tmp_path: Path) -> None:
    engine = CatalogEngine(SQLiteStore(tmp_path / "catalog.db"))
    run(engine.start([]))
    no_model = LocalHandle(DedupeEngine())
    with ingress_client(Settings(data_dir=tmp_path), engine, dedupe=no_model) as c:
        pid = run(engine.create_project(KEY_A, ProjectDraft(name="P"))).project_id
        answer = search(c, pid, png(picture(0)))
        assert answer.status_code == 409 and "dedupe.clip_model" in answer.json()["detail"]
    run(engine.close())


def test_the_job_keeps_each_images_embedding(world: World, dedupe: DedupeEngine) -> None:
    jobs = Jobs(world, world.replica(dedupe=dedupe))
    engine, me = jobs.replica.catalog, "c1"  # the client Jobs reads
    pid = run(engine.create_project(me, ProjectDraft(name="P"))).project_id
    spec = AssetSpec(asset_type="prop", name="Lamp", canonical_prompt="a brass lamp", seed=4)
    _, version = run(engine.create_asset(me, pid, spec, ["front", "detail"], None))
    job = AssetGenerateJob(
        soul_id=pid, asset_id=version.asset_id, asset_type="prop", version=1, roles=version.roles
    )
    job_id = run(jobs.desk.submit(me, job)).job_id
    assert jobs.work_once()
    assert jobs.doc(job_id).status == "succeeded", jobs.doc(job_id).error
    kept = run(engine.store.project_image_embeds(pid))
    assert sorted((a, v, r, m) for a, v, r, m, _ in kept) == [
        (version.asset_id, 1, "detail", TINY_CLIP),
        (version.asset_id, 1, "front", TINY_CLIP),
    ]
    stored = run(engine.get_asset_version(me, pid, version.asset_id, 1))
    front = jobs.replica.deliverer.objects.get(stored.images["front"])
    query = dedupe.check(frames_of(front), [])
    assert query.image_embed is not None
    hits = run(engine.search_assets_by_image(me, pid, query.image_embed, TINY_CLIP, None, [], 0, 5))
    assert hits[0][0].asset_id == version.asset_id
    assert hits[0][2] == pytest.approx(1.0, abs=1e-2)


def test_a_taxonomy_query_is_key_value_pairs_checked_as_a_taxonomy() -> None:
    assert taxonomy_of("") == {}
    assert taxonomy_of("species:fox,era:1920s,time:12:30") == {
        "species": "fox",
        "era": "1920s",
        "time": "12:30",
    }
    for text, words in (
        ("species", "taxonomy: each pair is key:value"),
        ("species:fox,species:owl", "taxonomy: a key is given twice"),
        ("Species:fox", "taxonomy.Species.[key]"),
        ("species:", "taxonomy.species"),
        (",".join(f"k{i}:v" for i in range(17)), "at most 16 items"),
    ):
        with pytest.raises(InvalidRequest) as refused:
            taxonomy_of(text)
        assert words in str(refused.value), str(refused.value)


def test_a_large_upload_travels_shrunk_to_the_image_model() -> None:
    assert frames_of(png(picture(0, size=64))).pixels.shape == (1, 64, 64, 3)
    assert frames_of(png(picture(0, size=2048))).pixels.shape == (1, 1024, 1024, 3)
