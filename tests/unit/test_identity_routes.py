"""The identity routes over the real Catalog engine (SQLite) and a local object store, without
Ray: what a client makes, reads and changes, uploads checked before anything is written, and
a version only its maker changes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib import cbook
from PIL import Image
from skimage import data as skimage_data

from deployments.catalog import CatalogEngine
from deployments.dedupe import DedupeEngine
from serve_app.api.deps import key_scope
from serve_app.catalog.souls import load_souls
from serve_app.characters.desk import CharacterDesk
from serve_app.characters.verdicts import IdentityAnchors, IdentityThresholds
from serve_app.settings import Settings
from serve_app.storage.objects import ObjectStore
from serve_app.storage.sqlite import SQLiteStore
from tests.support import run, static_http
from tests.unit.handles import LocalHandle
from tests.unit.ingress_app import ingress_client

MAX_BYTES = 60_000
MINE, THEIRS = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
ADA = {"description": {"hair_colour": "auburn", "eye_colour": "green"}, "seed_bank": [1, 2]}


def png(width: int = 48, height: int = 32) -> bytes:
    pixels = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def rotated_jpeg() -> bytes:
    """48x32 pixels stored, with EXIF orientation 6 (shown rotated: 32x48)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    Image.new("RGB", (48, 32), "red").save(out, format="JPEG", exif=exif)
    return out.getvalue()


def bomb() -> bytes:
    """A small PNG that declares 20000x20000 pixels (a decompression bomb)."""
    out = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(out, format="PNG", optimize=True)
    return out.getvalue()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[TestClient, CatalogEngine, Path]]:
    settings = Settings(
        data_dir=tmp_path,
        reference_max_bytes=MAX_BYTES,
        reference_max_pixels=1_000_000,
        reference_allow_private_hosts=True,
    )
    engine = CatalogEngine(SQLiteStore(tmp_path / "catalog.db"))
    run(engine.start(load_souls("config/souls.yaml")))

    def characters(catalog: LocalHandle, objects: ObjectStore) -> CharacterDesk:
        return CharacterDesk(catalog, LocalHandle(DedupeEngine()), objects, IdentityThresholds)

    with ingress_client(settings, engine, characters=characters) as client:
        yield client, engine, tmp_path / "objects"
    run(engine.close())


def stored(objects: Path) -> list[Path]:
    return sorted(p for p in objects.rglob("*.png")) if objects.exists() else []


def upload(client: TestClient, version: int, *files: bytes, **kw: Any) -> Any:
    parts = [("files", (f"f{i}.png", data, "image/png")) for i, data in enumerate(files)]
    headers = kw.pop("headers", MINE)
    return client.post(
        f"/souls/nova/identity/{version}/references", files=parts, headers=headers, **kw
    )


def test_a_version_is_made_read_listed_and_edited_by_its_maker(world: Any) -> None:
    client, _, _ = world
    made = client.post("/souls/nova/identity", json=ADA, headers=MINE)
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["version"] == 1 and body["state"] == "unlocked" and body["mine"] is True
    assert body["prompt"] == "auburn hair, green eyes" and body["seed_bank"] == [1, 2]
    second = client.post(
        "/souls/nova/identity", json={"parent": 1, "change_note": "new coat"}, headers=THEIRS
    ).json()
    assert second["version"] == 2 and len(second["seed_bank"]) == 8
    listed = client.get("/souls/nova/identity", headers=THEIRS).json()
    assert [(v["version"], v["parent"], v["mine"]) for v in listed] == [
        (1, None, False),
        (2, 1, True),
    ]
    edit = {**ADA, "description": {"hair_colour": "black"}, "strength": 0.3}
    assert client.patch("/souls/nova/identity/1", json=edit, headers=THEIRS).status_code == 403
    edited = client.patch("/souls/nova/identity/1", json=edit, headers=MINE).json()
    assert (edited["prompt"], edited["strength"]) == ("black hair", 0.3)
    assert client.get("/souls/nova/identity/1", headers=MINE).json() == edited
    for path, status in (("/souls/nova/identity/9", 404), ("/souls/nobody/identity", 404)):
        answer = client.get(path, headers=MINE)
        assert answer.status_code == status and answer.json()["request_id"] is not None
    assert client.post("/souls/nobody/identity", json=ADA, headers=MINE).status_code == 404
    bad = client.post("/souls/nova/identity", json={"strength": 2}, headers=MINE)
    assert bad.status_code == 422 and "strength" in bad.json()["detail"]


def test_references_are_uploaded_or_fetched_checked_and_signed(world: Any) -> None:
    client, _, objects = world
    client.post("/souls/nova/identity", json=ADA, headers=MINE)
    added = upload(client, 1, png(), rotated_jpeg())
    assert added.status_code == 200, added.text
    references = added.json()["references"]
    assert len(references) == 2 and all("/media/" in r["url"] for r in references)
    upright = Image.open(io.BytesIO(client.get(references[1]["url"]).content))
    assert (upright.format, upright.size) == ("PNG", (32, 48))  # EXIF orientation applied
    with static_http({"/face.png": png(64, 64)}) as server:
        fetched = client.post(
            "/souls/nova/identity/1/references", json={"url": f"{server}/face.png"}, headers=MINE
        )
    assert fetched.status_code == 200 and len(fetched.json()["references"]) == 3
    assert len(stored(objects)) == 3


@pytest.mark.parametrize(
    ("files", "status", "named"),
    [
        ((b"<html>not an image</html>",), 422, "files[0]: not a PNG"),
        ((png(), bytes(MAX_BYTES + 1)), 413, "files[1]: over the"),
        ((bomb(),), 422, "pixel"),
        ((b"",), 422, "files[0]: empty"),
    ],
)
def test_a_refused_upload_writes_nothing(
    world: Any, files: tuple[bytes, ...], status: int, named: str
) -> None:
    client, engine, objects = world
    client.post("/souls/nova/identity", json=ADA, headers=MINE)
    refused = upload(client, 1, *files)
    assert refused.status_code == status and named in refused.json()["detail"]
    assert refused.json()["request_id"] is not None
    assert stored(objects) == [] and run(engine.get_identity("nova", 1)).references == []


def test_bodies_without_images_are_refused(world: Any) -> None:
    client, _, objects = world
    client.post("/souls/nova/identity", json=ADA, headers=MINE)
    path = "/souls/nova/identity/1/references"
    empty = client.post(path, headers=MINE)
    assert empty.status_code == 422 and "multipart/form-data" in empty.json()["detail"]
    no_files = client.post(path, files={"files": (None, "text")}, headers=MINE)
    assert no_files.status_code == 422 and "no image file" in no_files.json()["detail"]
    private = client.post(path, json={"url": "ftp://host/x.png"}, headers=MINE)
    assert private.status_code == 422
    assert stored(objects) == []


def test_a_locked_version_and_another_clients_refuse_references(world: Any) -> None:
    client, engine, objects = world
    client.post("/souls/nova/identity", json=ADA, headers=MINE)
    assert upload(client, 1, png(), headers=THEIRS).status_code == 403
    assert upload(client, 1, png()).status_code == 200
    version = run(engine.get_identity("nova", 1))
    anchors = IdentityAnchors(reference_count=1, face_count=1)
    run(engine.lock_identity("nova", 1, anchors, version.updated_at_ts, key_scope("key-a")))
    locked = upload(client, 1, png())
    assert locked.status_code == 409 and "POST /souls/nova/identity" in locked.json()["detail"]
    assert client.patch("/souls/nova/identity/1", json=ADA, headers=MINE).status_code == 409
    assert client.post("/souls/nova/identity/1/lock", headers=MINE).status_code == 409
    shown = client.get("/souls/nova/identity/1", headers=MINE).json()
    assert (shown["state"], shown["faces_in_references"]) == ("locked", 1)
    assert len(stored(objects)) == 1


def test_the_report_of_a_soul_without_verdicts_is_empty_and_checks_its_parameters(
    world: Any,
) -> None:
    client, _, _ = world
    report = client.get("/souls/nova/identity/report?since=2026-01-01", headers=MINE)
    assert report.json() == {"soul_id": "nova", "versions": [], "flagged": [], "next_after": None}
    assert client.get("/souls/nobody/identity/report", headers=MINE).status_code == 404
    assert client.get("/souls/nova/identity/report?version=0", headers=MINE).status_code == 422


def photo(pixels: np.ndarray | None = None, mirrored: bool = False) -> bytes:
    """Grace Hopper (matplotlib's sample, public domain) or ``pixels``, as a JPEG."""
    if pixels is None:
        with cbook.get_sample_data("grace_hopper.jpg") as f:
            pixels = np.asarray(Image.open(f).convert("RGB"))
    out = io.BytesIO()
    Image.fromarray(pixels[:, ::-1] if mirrored else pixels).save(out, format="JPEG")
    return out.getvalue()


def test_a_version_of_photographs_is_locked_and_scores_photographs(world: Any) -> None:
    client, _, _ = world
    client.post("/souls/nova/identity", json=ADA, headers=MINE)
    assert client.post("/souls/nova/identity/1/lock", headers=MINE).status_code == 409  # no refs
    assert upload(client, 1, photo()).status_code == 200
    assert client.post("/souls/nova/identity/1/lock", headers=THEIRS).status_code == 403
    locked = client.post("/souls/nova/identity/1/lock", headers=MINE)
    assert locked.status_code == 200 and locked.json()["state"] == "locked"
    assert locked.json()["faces_in_references"] == 1

    def score(image: bytes, query: str = "") -> dict[str, Any]:
        files = [("files", ("x.jpg", image, "image/jpeg"))]
        answer = client.post(f"/souls/nova/identity/score{query}", files=files, headers=THEIRS)
        assert answer.status_code == 200, answer.text
        return answer.json()

    same = score(photo(mirrored=True), "?version=1")
    assert same["version"] == 1 and same["verdict"]["verdict"] == "verified"
    assert same["verdict"]["scorer"] == "face" and same["verdict"]["face_box"]
    other = score(photo(skimage_data.astronaut()))
    assert other["verdict"]["verdict"] == "off_model"
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    assert score(photo(noise))["verdict"]["verdict"] == "unscorable"
    client.post("/souls/nova/identity", json=ADA, headers=MINE)
    unlocked = client.post(
        "/souls/nova/identity/score?version=2",
        files=[("files", ("x.jpg", photo(), "image/jpeg"))],
        headers=MINE,
    )
    assert unlocked.status_code == 409 and "not locked" in unlocked.json()["detail"]
    none = client.post(
        "/souls/valentina/identity/score",
        files=[("files", ("x.jpg", photo(), "image/jpeg"))],
        headers=MINE,
    )
    assert none.status_code == 404


def test_an_upload_with_an_idempotency_key_is_added_once(world: Any) -> None:
    client, engine, objects = world
    client.post("/souls/nova/identity", json=ADA, headers=MINE)
    keyed = {**MINE, "Idempotency-Key": "refs-1"}
    first = upload(client, 1, png(), rotated_jpeg(), headers=keyed)
    assert first.status_code == 200, first.text
    retried = upload(client, 1, png(), rotated_jpeg(), headers=keyed)
    assert retried.status_code == 200 and retried.headers["Idempotent-Replayed"] == "true"
    ids = [r["reference_id"] for r in first.json()["references"]]
    assert [r["reference_id"] for r in retried.json()["references"]] == ids
    assert len(run(engine.get_identity("nova", 1)).references) == 2 and len(stored(objects)) == 2
    other = upload(client, 1, png(64, 64), headers=keyed)  # other images, the same key
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    assert len(stored(objects)) == 2
    unkeyed = upload(client, 1, png())  # without a key, every request adds
    assert unkeyed.status_code == 200 and len(unkeyed.json()["references"]) == 3


def test_a_render_pinning_a_version_that_is_not_locked_is_refused_writing_nothing(
    world: Any,
) -> None:
    client, engine, objects = world
    client.post("/souls/nova/identity", json=ADA, headers=MINE)  # version 1, unlocked
    for pin in (1, 2):
        image = client.get(
            f"/image?soul_id=nova&cue=a+fox&user_id=u1&identity_version={pin}", headers=MINE
        )
        assert image.status_code == 422 and "identity_version" in image.json()["detail"]
        selfie = client.post(
            "/selfie",
            json={"soul_id": "nova", "city_key": "paris", "mood": "happy", "user_id": "u1",
                  "identity_version": pin},
            headers=MINE,
        )  # fmt: skip
        assert selfie.status_code == 422 and "identity_version" in selfie.json()["detail"]
        pack = client.post(
            "/jobs",
            json={"kind": "pack", "soul_id": "nova", "user_id": "u1", "cue": "a fox", "count": 2,
                  "identity_version": pin},
            headers=MINE,
        )  # fmt: skip
        assert pack.status_code == 422 and "identity_version" in pack.json()["detail"]
    bad = client.get("/image?soul_id=nova&cue=a+fox&user_id=u1&identity_version=0", headers=MINE)
    assert bad.status_code == 422 and "identity_version" in bad.json()["detail"]
    assert client.get("/jobs", headers=MINE).json()["jobs"] == []
    assert run(engine.lookup("nova", "a fox")).key is None  # no key made, nothing claimed
    assert stored(objects) == []
