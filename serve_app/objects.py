"""Object store behind a small interface, chosen by fsspec URL; signed, expiring media URLs."""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import hmac
import mimetypes
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import fsspec

from serve_app.ids import new_ulid
from serve_app.settings import Settings

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

GCS_ENDPOINT = "https://storage.googleapis.com"
GCS_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
GCS_MAX_TTL_S = 7 * 24 * 3600  # the longest a V4 signed URL may live


@dataclass(frozen=True)
class SignedUrl:
    url: str
    expires_at: int


class ObjectStore(Protocol):
    backend: str  # names the kind of store in metrics: local, gcs

    def put(self, key: str, data: bytes) -> str:
        """Write a whole object atomically; return its location URL."""
        ...

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """A whole object; ``ObjectTooLarge`` past ``max_bytes`` (read no further than that)."""
        ...

    def list(self, prefix: str) -> builtins.list[str]:
        """Keys that start with ``prefix``, sorted (ULID-named keys: oldest first)."""
        ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def ping(self) -> None:
        """Raise when the store cannot be reached."""
        ...

    def signed_url(self, key: str, ttl_s: int) -> SignedUrl: ...


class ObjectTooLarge(Exception):
    pass


def _read(fs: Any, path: str, max_bytes: int | None) -> bytes:
    with fs.open(path, "rb") as f:
        data: bytes = f.read(-1 if max_bytes is None else max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ObjectTooLarge(f"object is over {max_bytes} bytes")
    return data


def _under(prefix: str, paths: list[str], root: str) -> list[str]:
    """The keys (paths relative to ``root``) among ``paths`` that start with ``prefix``."""
    keys = (path.removeprefix(f"{root}/") for path in paths)
    return sorted(key for key in keys if key.startswith(prefix))


class MediaSigner:
    """HMAC-SHA256 over (storage key, expiry): the token the ingress checks on ``/media``."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def signature(self, storage_key: str, expires_at: int) -> str:
        msg = f"{storage_key}\n{expires_at}".encode()
        digest = hmac.new(self._key, msg, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(
        self, storage_key: str, expires_at: int, signature: str, now: float | None = None
    ) -> bool:
        if expires_at < (time.time() if now is None else now):
            return False
        return hmac.compare_digest(self.signature(storage_key, expires_at), signature)


class LocalObjectStore:
    """A folder through fsspec's local filesystem; objects are served by the ingress."""

    backend = "local"

    def __init__(self, root: str, signer: MediaSigner, public_base_url: str = "") -> None:
        self.fs = fsspec.filesystem("file")
        self.root = Path(root.removeprefix("file://")).resolve()
        self._signer = signer
        self._base = public_base_url.rstrip("/")
        self.fs.makedirs(str(self.root), exist_ok=True)

    def path(self, key: str) -> Path:
        """The file of a key; refuses keys that would leave the root."""
        path = (self.root / key).resolve()
        if not key or not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"invalid storage key {key!r}")
        return path

    def put(self, key: str, data: bytes) -> str:
        path = self.path(key)
        self.fs.makedirs(str(path.parent), exist_ok=True)
        tmp = path.with_name(f".{path.name}.{new_ulid()}.tmp")
        with self.fs.open(str(tmp), "wb") as f:
            f.write(data)
        self.fs.mv(str(tmp), str(path))  # a rename: readers see all of it or nothing
        return path.as_uri()

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        return _read(self.fs, str(self.path(key)), max_bytes)

    def list(self, prefix: str) -> builtins.list[str]:
        folder = prefix.rpartition("/")[0]
        paths = self.fs.find(str(self.path(folder) if folder else self.root))
        # Dot files are put's temporary files: writes still in flight.
        done = [p for p in paths if not p.rpartition("/")[2].startswith(".")]
        return _under(prefix, done, self.root.as_posix())

    def delete(self, key: str) -> None:
        path = self.path(key)
        if self.fs.exists(str(path)):
            self.fs.rm(str(path))

    def exists(self, key: str) -> bool:
        return self.fs.exists(str(self.path(key)))

    def ping(self) -> None:
        if not self.fs.isdir(str(self.root)):
            raise OSError(f"object store folder {self.root} is missing")

    def verify(self, key: str, expires_at: int, signature: str) -> bool:
        return self._signer.verify(key, expires_at, signature)

    def signed_url(self, key: str, ttl_s: int) -> SignedUrl:
        expires_at = int(time.time()) + ttl_s
        sig = self._signer.signature(key, expires_at)
        return SignedUrl(f"{self._base}/media/{quote(key)}?exp={expires_at}&sig={sig}", expires_at)


class GCSObjectStore:
    """A bucket (and optional prefix) through gcsfs; objects are fetched by V4 signed URLs.

    Objects get no ACL: they are as private as the bucket (uniform bucket-level access).
    """

    backend = "gcs"

    def __init__(
        self,
        url: str,
        credentials_file: Path | None = None,
        endpoint: str = "",
        ping_timeout_s: float = 5.0,
    ) -> None:
        # gcsfs' default class first asks the gRPC Storage Control API for the bucket layout
        # (zonal, hierarchical), which emulators lack; the JSON API class is all we need.
        from gcsfs.core import GCSFileSystem

        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        if not bucket:
            raise ValueError(f"object store URL {url!r} names no bucket")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self._credentials_file = credentials_file
        self._endpoint = endpoint.rstrip("/") or GCS_ENDPOINT
        self._ping_timeout_s = ping_timeout_s
        # An emulator takes no credentials, as with the Google clients' STORAGE_EMULATOR_HOST.
        token = "anon" if endpoint else str(credentials_file or "google_default")
        self.fs = GCSFileSystem(
            token=token,
            endpoint_url=endpoint or None,
            access="read_write",
            use_listings_cache=False,  # other replicas write too: never trust an old listing
        )

    def _path(self, key: str) -> str:
        """bucket/prefix/key; refuses keys with empty, ``.`` or ``..`` segments."""
        if not key or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"invalid storage key {key!r}")
        return "/".join(part for part in (self.bucket, self.prefix, key) if part)

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        self.fs.pipe_file(path, data, content_type=content_type)  # one upload: all or nothing
        return f"gs://{path}"

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        return _read(self.fs, self._path(key), max_bytes)

    def list(self, prefix: str) -> builtins.list[str]:
        folder = prefix.rpartition("/")[0]
        root = "/".join(part for part in (self.bucket, self.prefix) if part)
        return _under(prefix, self.fs.find(self._path(folder) if folder else root), root)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._path(key))

    def exists(self, key: str) -> bool:
        try:
            return self.fs.info(self._path(key))["type"] == "file"
        except FileNotFoundError:
            return False

    def ping(self) -> None:
        """List one object under the prefix: needs only the objects.list permission."""
        prefix = f"{self.prefix}/" if self.prefix else None
        try:
            self.fs.call(
                "GET",
                "b/{}/o",
                self.bucket,
                prefix=prefix,
                maxResults=1,
                json_out=True,
                timeout=self._ping_timeout_s,  # gcsfs retries a refused connection for ~30 s
            )
        except Exception as exc:
            reason = str(exc) or type(exc).__name__  # a timeout has no message
            raise OSError(f"cannot list gs://{self.bucket} at {self._endpoint}: {reason}") from exc

    def signed_url(self, key: str, ttl_s: int) -> SignedUrl:
        if not 1 <= ttl_s <= GCS_MAX_TTL_S:
            raise ValueError(
                f"signed URL expiry must be 1..{GCS_MAX_TTL_S} s (7 days), got {ttl_s}"
            )
        from google.cloud import storage

        bucket, _, name = self._path(key).partition("/")
        expires_at = int(time.time()) + ttl_s  # taken before signing: never later than GCS's
        blob = storage.Client.create_anonymous_client().bucket(bucket).blob(name)
        url = blob.generate_signed_url(
            version="v4",
            expiration=timedelta(seconds=ttl_s),
            method="GET",
            api_access_endpoint=self._endpoint,
            **self._signing_args(),
        )
        return SignedUrl(url, expires_at)

    @cached_property
    def _credentials(self) -> Credentials:
        import google.auth
        from google.oauth2 import service_account

        if self._credentials_file:
            return service_account.Credentials.from_service_account_file(
                str(self._credentials_file), scopes=[GCS_SCOPE]
            )
        credentials, _ = google.auth.default(scopes=[GCS_SCOPE])
        return credentials

    def _signing_args(self) -> dict[str, Any]:
        """A key file signs locally; other credentials (workload identity) sign through the
        IAM signBlob API, which needs roles/iam.serviceAccountTokenCreator on the account."""
        from google.auth.credentials import Signing
        from google.auth.transport.requests import Request

        credentials = self._credentials
        if isinstance(credentials, Signing):
            return {"credentials": credentials}
        if not credentials.valid:
            credentials.refresh(Request())
        return {
            "credentials": credentials,
            "service_account_email": getattr(credentials, "service_account_email", None),
            "access_token": credentials.token,
        }


def open_object_store(settings: Settings) -> ObjectStore:
    """The backend named by the URL's scheme: a folder (or file://) or gs://bucket[/prefix]."""
    url = settings.resolved_object_store_url
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    if scheme == "file":
        return LocalObjectStore(url, MediaSigner(settings.media_key), settings.public_base_url)
    if scheme == "gs":
        return GCSObjectStore(url, settings.gcs_credentials_file, settings.gcs_endpoint)
    raise ValueError(
        f"unsupported object store URL {url!r}: use a folder path, file://... or gs://bucket/prefix"
    )
