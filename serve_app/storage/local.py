"""A local folder as the object store (the embedded default); the ingress serves its objects
under ``/media`` with an HMAC-signed, expiring token."""

from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import time
from pathlib import Path
from urllib.parse import quote

import fsspec

from serve_app.ids import new_ulid
from serve_app.storage.objects import SignedUrl, read_capped, under


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
        # As bytes: compare_digest refuses str with non-ASCII characters (a 500, not a 403).
        expected = self.signature(storage_key, expires_at).encode()
        return hmac.compare_digest(expected, signature.encode("utf-8", "surrogatepass"))


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
        return read_capped(self.fs, str(self.path(key)), max_bytes)

    def put_file(self, key: str, source: Path) -> None:
        path = self.path(key)
        self.fs.makedirs(str(path.parent), exist_ok=True)
        tmp = path.with_name(f".{path.name}.{new_ulid()}.tmp")
        self.fs.put_file(str(source), str(tmp))
        self.fs.mv(str(tmp), str(path))

    def get_file(self, key: str, target: Path) -> None:
        self.fs.get_file(str(self.path(key)), str(target))

    def list(self, prefix: str) -> builtins.list[str]:
        folder = prefix.rpartition("/")[0]
        paths = self.fs.find(str(self.path(folder) if folder else self.root))
        # Dot files are put's temporary files: writes still in flight.
        done = [p for p in paths if not p.rpartition("/")[2].startswith(".")]
        return under(prefix, done, self.root.as_posix())

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
