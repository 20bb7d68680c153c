"""The object store's interface; signed, expiring media URLs.

One module per backend: ``local`` (a folder, served by the ingress under ``/media``) and
``gcs`` (a private bucket, V4 signed URLs), chosen by URL in ``serve_app.storage``.
"""

from __future__ import annotations

import builtins
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("ray.serve")


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

    def put_file(self, key: str, source: Path) -> None:
        """Write a whole object from a local file, streamed (model weights run to gigabytes)."""
        ...

    def get_file(self, key: str, target: Path) -> None:
        """Copy a whole object to a local file, streamed; FileNotFoundError when absent."""
        ...

    def delete(self, key: str) -> None: ...

    def exists(self, key: str) -> bool: ...

    def ping(self) -> None:
        """Raise when the store cannot be reached."""
        ...

    def signed_url(self, key: str, ttl_s: int) -> SignedUrl: ...


class ObjectTooLarge(Exception):
    pass


def read_capped(fs: Any, path: str, max_bytes: int | None) -> bytes:
    with fs.open(path, "rb") as f:
        data: bytes = f.read(-1 if max_bytes is None else max_bytes + 1)
    if max_bytes is not None and len(data) > max_bytes:
        raise ObjectTooLarge(f"object is over {max_bytes} bytes")
    return data


def under(prefix: str, paths: list[str], root: str) -> list[str]:
    """The keys (paths relative to ``root``) among ``paths`` that start with ``prefix``."""
    keys = (path.removeprefix(f"{root}/") for path in paths)
    return sorted(key for key in keys if key.startswith(prefix))


def remove_objects(objects: ObjectStore, stem: str) -> None:
    """Every object of one variant (cover, thumbnail, sidecar, each format); one that can't go
    stays for the sweeper: an orphan costs storage, not correctness."""
    for object_key in objects.list(stem):
        try:
            objects.delete(object_key)
        except Exception:
            log.exception("could not remove %s", object_key)
