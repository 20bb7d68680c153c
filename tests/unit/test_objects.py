"""Unit tests for the object stores (signed media URLs, local object store) and media keys."""

from __future__ import annotations

import stat
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from serve_app.settings import Settings
from serve_app.storage import open_object_store
from serve_app.storage.local import LocalObjectStore, MediaSigner
from serve_app.storage.objects import ObjectTooLarge

KEY = "soul/nova/key/abc/variant/01J.gif"


@pytest.fixture(autouse=True)
def no_soul_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["SOUL_MEDIA_SECRET", "SOUL_OBJECT_STORE_URL", "SOUL_DATA_DIR"]:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def signer() -> MediaSigner:
    return MediaSigner(b"secret-one")


@pytest.fixture
def objects(tmp_path: Path, signer: MediaSigner) -> LocalObjectStore:
    return LocalObjectStore(str(tmp_path / "objects"), signer, "https://soul.example.com/")


# MediaSigner.


def test_fresh_signature_verifies(signer: MediaSigner) -> None:
    exp = int(time.time()) + 60
    assert signer.verify(KEY, exp, signer.signature(KEY, exp))


def test_signature_is_deterministic_and_url_safe(signer: MediaSigner) -> None:
    sig = signer.signature(KEY, 1000)
    assert sig == signer.signature(KEY, 1000)
    assert "=" not in sig and "+" not in sig and "/" not in sig


def test_tampering_is_rejected(signer: MediaSigner) -> None:
    exp = 2_000
    sig = signer.signature(KEY, exp)
    assert signer.verify(KEY, exp, sig, now=1_000)
    assert not signer.verify(KEY + "x", exp, sig, now=1_000)
    assert not signer.verify("soul/nova/other.gif", exp, sig, now=1_000)
    assert not signer.verify(KEY, exp + 1, sig, now=1_000)
    tampered = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert not signer.verify(KEY, exp, tampered, now=1_000)
    assert not signer.verify(KEY, exp, "", now=1_000)


@pytest.mark.parametrize("sig", ["é", "\u2603" * 43, "\x00"])
def test_a_signature_that_is_not_ascii_is_rejected_not_an_error(
    signer: MediaSigner, sig: str
) -> None:
    assert not signer.verify(KEY, 2_000, sig, now=1_000)


def test_expired_signature_is_rejected(signer: MediaSigner) -> None:
    sig = signer.signature(KEY, 1_000)
    assert signer.verify(KEY, 1_000, sig, now=1_000)
    assert not signer.verify(KEY, 1_000, sig, now=1_001)


def test_signature_from_another_secret_is_rejected(signer: MediaSigner) -> None:
    other = MediaSigner(b"secret-two")
    assert not signer.verify(KEY, 2_000, other.signature(KEY, 2_000), now=1_000)


# LocalObjectStore.


def test_put_exists_delete_round_trip(objects: LocalObjectStore) -> None:
    assert not objects.exists(KEY)
    url = objects.put(KEY, b"GIF89a...")
    assert objects.exists(KEY)
    assert url == objects.path(KEY).as_uri()
    assert objects.path(KEY).read_bytes() == b"GIF89a..."
    objects.put(KEY, b"again")  # whole-object overwrite: a retry is safe
    assert objects.path(KEY).read_bytes() == b"again"
    objects.delete(KEY)
    assert not objects.exists(KEY)
    objects.delete(KEY)  # deleting a missing object is fine
    objects.ping()


def test_get_reads_a_whole_object_under_an_optional_cap(objects: LocalObjectStore) -> None:
    objects.put(KEY, b"GIF89a")
    assert objects.get(KEY) == objects.get(KEY, max_bytes=6) == b"GIF89a"
    with pytest.raises(ObjectTooLarge):
        objects.get(KEY, max_bytes=5)
    with pytest.raises(FileNotFoundError):
        objects.get("soul/nova/missing.gif")


def test_list_gives_the_keys_under_a_prefix_sorted(objects: LocalObjectStore) -> None:
    refs = ["soul/nova/reference/01B.png", "soul/nova/reference/01A.png"]
    for key in [*refs, KEY, "soul/nova-2/reference/01C.png"]:
        objects.put(key, b"x")
    (objects.root / "soul/nova/reference/.01D.png.01E.tmp").write_bytes(b"in flight")
    assert objects.list("soul/nova/reference/") == sorted(refs)
    assert objects.list("soul/nova/reference/01B") == [refs[0]]
    assert objects.list("soul/nova/") == [KEY, *sorted(refs)]
    assert objects.list("soul/nova") == sorted([KEY, *refs, "soul/nova-2/reference/01C.png"])
    assert objects.list("") == objects.list("soul/")
    assert objects.list("soul/ghost/reference/") == []
    with pytest.raises(ValueError, match="invalid storage key"):
        objects.list("../elsewhere/")


def test_put_leaves_no_temp_files(objects: LocalObjectStore) -> None:
    objects.put(KEY, b"one")
    objects.put("soul/nova/cover.png", b"two")
    files = sorted(p.relative_to(objects.root).as_posix() for p in objects.root.rglob("*"))
    assert [f for f in files if objects.root.joinpath(f).is_file()] == sorted(
        [KEY, "soul/nova/cover.png"]
    )


@pytest.mark.parametrize(
    "key", ["", "../x", "a/../../x", "/etc/passwd", "soul/../../etc/passwd", ".", "a/.."]
)
def test_path_refuses_keys_outside_the_root(objects: LocalObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        objects.path(key)
    with pytest.raises(ValueError):
        objects.put(key, b"x")
    assert not (objects.root.parent / "x").exists()


def test_path_accepts_nested_keys_inside_the_root(objects: LocalObjectStore) -> None:
    assert objects.path("a/./b/../c.gif") == objects.root / "a" / "c.gif"


def test_signed_url_embeds_exp_and_sig_that_verify(objects: LocalObjectStore) -> None:
    before = int(time.time())
    signed = objects.signed_url(KEY, ttl_s=300)
    parts = urlsplit(signed.url)
    assert f"{parts.scheme}://{parts.netloc}" == "https://soul.example.com"
    assert parts.path == f"/media/{KEY}"
    query = parse_qs(parts.query)
    exp, sig = int(query["exp"][0]), query["sig"][0]
    assert exp == signed.expires_at
    assert before + 300 <= exp <= int(time.time()) + 300
    assert objects.verify(KEY, exp, sig)
    assert not objects.verify(KEY, exp + 1, sig)
    assert not objects.verify("soul/other.gif", exp, sig)


def test_open_object_store_defaults_to_data_dir(tmp_path: Path) -> None:
    store = open_object_store(Settings(data_dir=tmp_path))
    assert store.root == (tmp_path / "objects").resolve()
    store.ping()
    for url in [str(tmp_path / "elsewhere"), f"file://{tmp_path / 'elsewhere'}"]:
        store = open_object_store(Settings(data_dir=tmp_path, object_store_url=url))
        assert store.root == (tmp_path / "elsewhere").resolve()


# Settings.media_key.


def test_media_key_is_created_once_with_mode_600(tmp_path: Path) -> None:
    key = Settings(data_dir=tmp_path).media_key
    path = tmp_path / "media.key"
    assert len(key) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Settings(data_dir=tmp_path).media_key == key
    assert [p.name for p in tmp_path.iterdir()] == ["media.key"]  # no temp file left behind


def test_media_key_differs_per_data_dir(tmp_path: Path) -> None:
    assert (
        Settings(data_dir=tmp_path / "a").media_key != Settings(data_dir=tmp_path / "b").media_key
    )


def test_explicit_media_secret_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generated = Settings(data_dir=tmp_path).media_key  # a key file exists
    assert Settings(data_dir=tmp_path, media_secret="s3cr3t").media_key == b"s3cr3t" != generated
    monkeypatch.setenv("SOUL_MEDIA_SECRET", "from-env")
    assert Settings(data_dir=tmp_path).media_key == b"from-env"


# Signed media URLs (the /media route).
def test_a_signed_key_outside_the_store_is_a_404_not_an_error(
    objects: LocalObjectStore, signer: MediaSigner, tmp_path: Path
) -> None:
    from serve_app.errors import Forbidden, NotFound
    from serve_app.media.answers import media_file

    exp = int(time.time()) + 60
    outside = tmp_path / "secret.txt"
    outside.write_text("not media")
    (objects.root / "soul").mkdir(exist_ok=True)
    (objects.root / "soul" / "planted.gif").symlink_to(outside)
    for key in ["../secret.txt", str(outside), "", "soul/planted.gif", "soul/missing.gif"]:
        with pytest.raises(NotFound):
            media_file(objects, key, exp, signer.signature(key, exp))
    objects.put("soul/real.gif", b"GIF89a")
    assert media_file(objects, "soul/real.gif", exp, signer.signature("soul/real.gif", exp))
    with pytest.raises(Forbidden):
        media_file(objects, "soul/real.gif", exp, "é")
