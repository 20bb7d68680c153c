"""Where the catalog's rows and the media's objects are kept: the backends, chosen here.

A catalog store by DSN scheme (``sqlite:///path.db``, ``postgresql://...``), an object store by
URL scheme (a folder or ``file://``, ``gs://bucket/prefix``). Each backend is a module of this
package, imported only when chosen (psycopg and the GCS client are heavy); a new backend is one
module and one row of a table below.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from serve_app.settings import Settings
from serve_app.storage.changes import ChangeFeed, DatagramFeed
from serve_app.storage.objects import ObjectStore
from serve_app.storage.tables import CatalogStore


def _sqlite(dsn: str, pool_min: int, pool_max: int, timeout_s: float) -> CatalogStore:
    from serve_app.storage.sqlite import SQLiteStore

    return SQLiteStore(Path(dsn.removeprefix("sqlite:///")))


def _postgres(dsn: str, pool_min: int, pool_max: int, timeout_s: float) -> CatalogStore:
    from serve_app.storage.postgres import PostgresStore

    return PostgresStore(dsn, pool_min=pool_min, pool_max=pool_max, timeout_s=timeout_s)


STORES: dict[str, Callable[[str, int, int, float], CatalogStore]] = {
    "sqlite:///": _sqlite,
    "postgresql://": _postgres,
    "postgres://": _postgres,
}


def open_store(
    dsn: str, *, pool_min: int = 1, pool_max: int = 10, timeout_s: float = 5.0
) -> CatalogStore:
    """The backend the DSN's scheme names."""
    for prefix, opener in STORES.items():
        if dsn.startswith(prefix):
            return opener(dsn, pool_min, pool_max, timeout_s)
    raise ValueError(
        f"unsupported catalog DSN {dsn.split('://')[0]!r}: "
        "use sqlite:///path.db or postgresql://user@host:port/db"
    )


def store_for(settings: Settings) -> CatalogStore:
    return open_store(
        settings.resolved_database_url,
        pool_min=settings.store.database_pool_min,
        pool_max=settings.store.database_pool_max,
        timeout_s=settings.store.database_timeout_s,
    )


def change_feed(settings: Settings) -> ChangeFeed:
    """The job change feed of the catalog ``settings`` names (``storage/changes.py``)."""
    dsn = settings.resolved_database_url
    if dsn.startswith("sqlite:///"):
        return DatagramFeed(Path(dsn.removeprefix("sqlite:///")))
    from serve_app.storage.postgres import PostgresFeed

    return PostgresFeed(dsn, settings.store.database_timeout_s)


def _local(url: str, settings: Settings) -> ObjectStore:
    from serve_app.storage.local import LocalObjectStore, MediaSigner

    return LocalObjectStore(url, MediaSigner(settings.media_key), settings.media.public_base_url)


def _gcs(url: str, settings: Settings) -> ObjectStore:
    from serve_app.storage.gcs import GCSObjectStore

    return GCSObjectStore(url, settings.objects.gcs_credentials_file, settings.objects.gcs_endpoint)


OBJECT_STORES: dict[str, Callable[[str, Settings], ObjectStore]] = {"file": _local, "gs": _gcs}


def open_object_store(settings: Settings, url: str = "") -> ObjectStore:
    """The backend named by the URL's scheme: a folder (or file://) or gs://bucket[/prefix];
    ``url`` (default: the media store's, ``SOUL_OBJECT_STORE_URL``)."""
    url = url or settings.resolved_object_store_url
    scheme = url.split("://", 1)[0] if "://" in url else "file"
    if scheme not in OBJECT_STORES:
        raise ValueError(
            f"unsupported object store URL {url!r}: "
            "use a folder path, file://... or gs://bucket/prefix"
        )
    return OBJECT_STORES[scheme](url, settings)


__all__ = [
    "CatalogStore",
    "ObjectStore",
    "change_feed",
    "open_object_store",
    "open_store",
    "store_for",
]
