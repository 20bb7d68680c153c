"""A Google Cloud Storage bucket as the object store, through gcsfs; V4 signed URLs."""

from __future__ import annotations

import builtins
import contextlib
import mimetypes
import time
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serve_app.storage.objects import SignedUrl, read_capped, under

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

GCS_ENDPOINT = "https://storage.googleapis.com"
GCS_SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
GCS_MAX_TTL_S = 7 * 24 * 3600  # the longest a V4 signed URL may live


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
        return read_capped(self.fs, self._path(key), max_bytes)

    def put_file(self, key: str, source: Path) -> None:
        self.fs.put_file(str(source), self._path(key))  # an upload is all or nothing

    def get_file(self, key: str, target: Path) -> None:
        self.fs.get_file(self._path(key), str(target))

    def list(self, prefix: str) -> builtins.list[str]:
        folder = prefix.rpartition("/")[0]
        root = "/".join(part for part in (self.bucket, self.prefix) if part)
        return under(prefix, self.fs.find(self._path(folder) if folder else root), root)

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
