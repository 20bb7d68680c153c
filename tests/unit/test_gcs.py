"""GCSObjectStore against gcp-storage-emulator (in-process), signing with a throwaway key."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import google.auth
import httpx
import numpy as np
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from gcp_storage_emulator.server import create_server
from gcsfs.core import GCSFileSystem
from google.auth.credentials import Credentials
from google.cloud.storage import _signing

from serve_app.references import (
    ReferenceRejected,
    ReferenceTooLarge,
    ReferenceUnreachable,
    fetch_reference,
)
from serve_app.settings import Settings
from serve_app.storage import open_object_store
from serve_app.storage.gcs import GCSObjectStore
from serve_app.storage.local import LocalObjectStore
from serve_app.storage.objects import ObjectTooLarge

BUCKET, PREFIX = "artifacts-test-soulmedia", "media/v1"
KEY = "soul/nova/key/3f786850e387550fdab836ed7e6dc881de23001b/variant/01JDQ4Z5V8.gif"
CLIENT_EMAIL = "soul-signer@soul-test.iam.gserviceaccount.com"
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"


@dataclass(frozen=True)
class ServiceAccount:
    key_file: Path
    private_key: rsa.RSAPrivateKey


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def no_gcs_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ["SOUL_OBJECT_STORE_URL", "SOUL_GCS_ENDPOINT", "SOUL_GCS_CREDENTIALS_FILE"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)


@pytest.fixture(scope="module")
def emulator() -> Iterator[str]:
    """The emulator's HTTP server in a thread of this process, with the bucket created."""
    port = free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="module")
def service_account(tmp_path_factory: pytest.TempPathFactory) -> ServiceAccount:
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    key_file = tmp_path_factory.mktemp("gcs") / "service-account.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "soul-test",
                "private_key_id": "0123456789abcdef",
                "private_key": pem,
                "client_email": CLIENT_EMAIL,
                "client_id": "123456789012345678901",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    return ServiceAccount(key_file, private_key)


@pytest.fixture(scope="module")
def store(emulator: str, service_account: ServiceAccount) -> GCSObjectStore:
    return GCSObjectStore(f"gs://{BUCKET}/{PREFIX}", service_account.key_file, emulator)


def v4_string_to_sign(url: str) -> tuple[str, bytes]:
    """Rebuild the V4 string-to-sign of a signed GET URL; return it and the URL's signature.

    https://cloud.google.com/storage/docs/authentication/signatures
    """
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    signature = bytes.fromhex(params.pop("X-Goog-Signature"))
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items())
    )
    canonical_request = "\n".join(
        ["GET", parts.path, canonical_query, f"host:{parts.netloc}\n", "host", "UNSIGNED-PAYLOAD"]
    )
    scope = params["X-Goog-Credential"].split("/", 1)[1]
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    return "\n".join(["GOOG4-RSA-SHA256", params["X-Goog-Date"], scope, digest]), signature


def signature_verifies(url: str, private_key: rsa.RSAPrivateKey) -> bool:
    string_to_sign, signature = v4_string_to_sign(url)
    try:
        private_key.public_key().verify(
            signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except InvalidSignature:
        return False
    return True


# Objects.


def test_put_exists_read_back_delete(store: GCSObjectStore, emulator: str) -> None:
    assert not store.exists(KEY)
    assert store.put(KEY, GIF) == f"gs://{BUCKET}/{PREFIX}/{KEY}"
    assert store.exists(KEY)

    reader = GCSFileSystem(token="anon", endpoint_url=emulator, skip_instance_cache=True)
    path = f"{BUCKET}/{PREFIX}/{KEY}"
    assert reader.cat_file(path) == GIF
    assert reader.info(path)["contentType"] == "image/gif"
    store.put(KEY, b"again")  # whole-object overwrite: a retry is safe
    assert reader.cat_file(path) == b"again"

    store.delete(KEY)
    assert not store.exists(KEY)
    assert not reader.exists(path)
    store.delete(KEY)  # deleting a missing object is fine


def test_exists_is_false_for_a_prefix(store: GCSObjectStore) -> None:
    store.put(KEY, GIF)
    try:
        assert not store.exists(KEY.rsplit("/", 1)[0])
    finally:
        store.delete(KEY)


@pytest.mark.parametrize("key", ["", "/abs.gif", "a//b.gif", "../x.gif", "a/../b.gif", "a/./b"])
def test_invalid_keys_are_refused(store: GCSObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid storage key"):
        store.put(key, GIF)
    with pytest.raises(ValueError, match="invalid storage key"):
        store.signed_url(key, 60)


def test_get_reads_a_whole_object_under_an_optional_cap(store: GCSObjectStore) -> None:
    store.put(KEY, GIF)
    try:
        assert store.get(KEY) == store.get(KEY, max_bytes=len(GIF)) == GIF
        with pytest.raises(ObjectTooLarge):
            store.get(KEY, max_bytes=len(GIF) - 1)
    finally:
        store.delete(KEY)
    with pytest.raises(FileNotFoundError):
        store.get(KEY)


def test_list_gives_the_keys_under_a_prefix_sorted(store: GCSObjectStore) -> None:
    refs = ["soul/nova/reference/01B.png", "soul/nova/reference/01A.png"]
    keys = [*refs, KEY, "soul/nova-2/reference/01C.png"]
    for key in keys:
        store.put(key, b"x")
    try:
        assert store.list("soul/nova/reference/") == sorted(refs)
        assert store.list("soul/nova/reference/01B") == [refs[0]]
        assert store.list("soul/nova/") == [KEY, *sorted(refs)]
        assert store.list("soul/nova") == sorted(keys)
        assert store.list("") == sorted(keys)
        assert store.list("soul/ghost/reference/") == []
    finally:
        for key in keys:
            store.delete(key)


# Ping.


def test_ping(store: GCSObjectStore) -> None:
    store.ping()


def test_ping_fails_cleanly_against_a_dead_endpoint(service_account: ServiceAccount) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    store = GCSObjectStore(f"gs://{BUCKET}", service_account.key_file, dead, ping_timeout_s=1)
    started = time.monotonic()
    with pytest.raises(OSError, match=f"cannot list gs://{BUCKET} at {dead}: FSTimeoutError"):
        store.ping()
    assert time.monotonic() - started < 5


def test_ping_fails_for_a_missing_bucket(emulator: str, service_account: ServiceAccount) -> None:
    store = GCSObjectStore("gs://no-such-bucket/x", service_account.key_file, emulator)
    with pytest.raises(OSError, match="cannot list gs://no-such-bucket"):
        store.ping()


# Signed URLs.


def test_signed_url_is_v4_with_the_expiry_asked_for(
    store: GCSObjectStore, emulator: str, service_account: ServiceAccount
) -> None:
    before = int(time.time())
    signed = store.signed_url(KEY, 300)
    parts = urlsplit(signed.url)
    assert f"{parts.scheme}://{parts.netloc}" == emulator
    assert parts.path == f"/{BUCKET}/{PREFIX}/{KEY}"
    query = dict(parse_qsl(parts.query))
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-Expires"] == "300"
    assert query["X-Goog-SignedHeaders"] == "host"
    date = time.strftime("%Y%m%d", time.gmtime(before))
    assert query["X-Goog-Credential"] == f"{CLIENT_EMAIL}/{date}/auto/storage/goog4_request"
    assert before + 300 <= signed.expires_at <= int(time.time()) + 300

    assert signature_verifies(signed.url, service_account.private_key)
    tampered = signed.url.replace("X-Goog-Expires=300", "X-Goog-Expires=604800")
    assert not signature_verifies(tampered, service_account.private_key)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert not signature_verifies(signed.url, other_key)


def test_signed_url_fetches_the_object(store: GCSObjectStore) -> None:
    # The emulator serves /<bucket>/<object> but does not check signatures (they are checked
    # cryptographically above): this shows the URL names the right object on the endpoint.
    store.put(KEY, GIF)
    try:
        response = httpx.get(store.signed_url(KEY, 60).url)
        assert response.status_code == 200
        assert response.content == GIF
        assert response.headers["content-type"] == "image/gif"
    finally:
        store.delete(KEY)


def test_expiry_is_at_most_seven_days(store: GCSObjectStore) -> None:
    assert "X-Goog-Expires=604800" in store.signed_url(KEY, 604800).url
    for ttl in [604801, 0, -1]:
        with pytest.raises(ValueError, match=r"expiry must be 1\.\.604800 s \(7 days\)"):
            store.signed_url(KEY, ttl)


def test_without_a_key_file_signs_through_iam(
    emulator: str, service_account: ServiceAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Application Default Credentials that hold no key (workload identity) sign via IAM
    signBlob; here the test key stands in for the service account's Google-held key."""

    class WorkloadIdentity(Credentials):
        service_account_email = "default"

        def refresh(self, request: Any) -> None:
            self.token, self.service_account_email = "access-token", CLIENT_EMAIL

    def sign_blob(message: str, access_token: str, service_account_email: str, *_: Any) -> str:
        assert (access_token, service_account_email) == ("access-token", CLIENT_EMAIL)
        signature = service_account.private_key.sign(
            message.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return base64.b64encode(signature).decode()

    monkeypatch.setattr(google.auth, "default", lambda scopes: (WorkloadIdentity(), "soul-test"))
    monkeypatch.setattr(_signing, "_sign_message", sign_blob)
    store = GCSObjectStore(f"gs://{BUCKET}/{PREFIX}", None, emulator)
    url = store.signed_url(KEY, 60).url
    assert f"X-Goog-Credential={quote(CLIENT_EMAIL, safe='')}" in url
    assert signature_verifies(url, service_account.private_key)


# open_object_store.


def test_open_object_store_picks_gcs_for_gs_urls(
    tmp_path: Path, emulator: str, service_account: ServiceAccount, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOUL_OBJECT_STORE_URL", f"gs://{BUCKET}/{PREFIX}/")
    monkeypatch.setenv("SOUL_GCS_ENDPOINT", emulator)
    monkeypatch.setenv("SOUL_GCS_CREDENTIALS_FILE", str(service_account.key_file))
    store = open_object_store(Settings(data_dir=tmp_path))
    assert isinstance(store, GCSObjectStore)
    assert (store.bucket, store.prefix) == (BUCKET, PREFIX)
    store.ping()
    assert store.signed_url(KEY, 60).url.startswith(f"{emulator}/{BUCKET}/{PREFIX}/{KEY}?")
    assert not (tmp_path / "objects").exists()


def test_open_object_store_picks_local_for_folders(tmp_path: Path) -> None:
    for url in ["", str(tmp_path / "objects"), f"file://{tmp_path / 'objects'}"]:
        store = open_object_store(Settings(data_dir=tmp_path, object_store_url=url))
        assert isinstance(store, LocalObjectStore)


@pytest.mark.parametrize(
    ("url", "message"),
    [("s3://bucket/prefix", "unsupported object store URL"), ("gs:///prefix", "names no bucket")],
)
def test_open_object_store_refuses(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_object_store(Settings(data_dir=tmp_path, object_store_url=url))


# Reference images from gs:// URLs, read with the object store's settings.


def png_bytes() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 6), "teal").save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def reference_settings(emulator: str, service_account: ServiceAccount) -> Settings:
    return Settings(
        gcs_endpoint=emulator,
        gcs_credentials_file=service_account.key_file,
        reference_gcs_buckets=[BUCKET],
        reference_max_bytes=10_000,
    )


def test_reference_from_gs(store: GCSObjectStore, reference_settings: Settings) -> None:
    store.put("uploads/cat.png", png_bytes())
    try:
        ref = fetch_reference(f"gs://{BUCKET}/{PREFIX}/uploads/cat.png", reference_settings)
        assert (ref.width, ref.height) == (8, 6) and ref.png.startswith(b"\x89PNG")
    finally:
        store.delete("uploads/cat.png")


def test_reference_from_gs_refusals(store: GCSObjectStore, reference_settings: Settings) -> None:
    url = f"gs://{BUCKET}/{PREFIX}/uploads/big.png"
    store.put("uploads/big.png", b"x" * 10_001)
    try:
        with pytest.raises(ReferenceTooLarge, match="over the 10000 byte limit"):
            fetch_reference(url, reference_settings)
    finally:
        store.delete("uploads/big.png")
    with pytest.raises(ReferenceUnreachable, match="cannot read gs://"):
        fetch_reference(url, reference_settings)
    with pytest.raises(ReferenceRejected, match="invalid storage key"):
        fetch_reference(f"gs://{BUCKET}/a/../b.png", reference_settings)
    for other in [f"gs://other-bucket/{PREFIX}/uploads/cat.png"]:
        with pytest.raises(ReferenceRejected, match="is not allowed for references"):
            fetch_reference(other, reference_settings)
    with pytest.raises(ReferenceRejected, match="is not allowed for references"):
        fetch_reference(url, Settings())  # no bucket is allowed by default


def test_models_are_mirrored_to_the_bucket_and_copied_down_verified(
    emulator: str, service_account: ServiceAccount, tmp_path: Path
) -> None:
    """A node downloads from CivitAI and mirrors; a new node copies from the mirror without
    asking CivitAI for the file; a corrupted mirror copy is refused, fetched again and
    mirrored anew."""
    from safetensors.numpy import save

    from serve_app.diffusion.sources import ModelManager
    from tests.support import FakeCivitai

    mirror = GCSObjectStore(f"gs://{BUCKET}/models", service_account.key_file, emulator)
    weights = save({"lora_down": np.arange(64, dtype=np.float32).reshape(8, 8)})
    civitai = FakeCivitai()
    ref = civitai.publish("301", weights, name="ink.safetensors")

    def node(name: str) -> ModelManager:
        return ModelManager(
            tmp_path / name, civitai_url=civitai.url, civitai_token=FakeCivitai.TOKEN, mirror=mirror
        )

    try:
        assert node("first").ensure(ref).read_bytes() == weights
        assert mirror.get("civitai/301/ink.safetensors") == weights
        record = json.loads(mirror.get("civitai/301/version.json"))
        assert record["sha256"] == hashlib.sha256(weights).hexdigest()

        downloads = civitai.requests.count("/cdn/301")
        assert node("second").ensure(ref).read_bytes() == weights
        assert civitai.requests.count("/cdn/301") == downloads  # from the mirror, not CivitAI

        mirror.put("civitai/301/ink.safetensors", weights[:-1] + b"!")  # bit rot in the bucket
        assert node("third").ensure(ref).read_bytes() == weights  # refused, fetched again
        assert civitai.requests.count("/cdn/301") == downloads + 1
        assert mirror.get("civitai/301/ink.safetensors") == weights  # and mirrored anew
    finally:
        civitai.close()


def test_a_settings_mirror_url_opens_its_store(tmp_path: Path) -> None:
    from serve_app.diffusion.sources import model_manager

    settings = Settings(data_dir=tmp_path, model_cache_url=str(tmp_path / "mirror"))
    manager = model_manager(settings)
    assert isinstance(manager.mirror, LocalObjectStore)
    assert manager.mirror.root == (tmp_path / "mirror").resolve()
    source = tmp_path / "weights.bin"
    source.write_bytes(b"w" * 1000)
    manager.mirror.put_file("a/b.safetensors", source)
    manager.mirror.get_file("a/b.safetensors", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == source.read_bytes()
    assert model_manager(Settings(data_dir=tmp_path)).mirror is None
