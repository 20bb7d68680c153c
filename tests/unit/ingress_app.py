"""The routed API over the real Catalog engine and a local object store, without Ray, for the
route tests: two API clients (``key-a``, ``key-b``), no admin."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from deployments.catalog import CatalogEngine
from serve_app.api.idempotency import Replays
from serve_app.api.routes import routed_api
from serve_app.api.services import IngressServices
from serve_app.delivery import Deliverer, Handles
from serve_app.delivery.places import load_places
from serve_app.diffusion.sources import model_manager
from serve_app.jobs.desk import JobDesk
from serve_app.looks import Looks
from serve_app.settings import Settings
from serve_app.storage import change_feed, open_object_store
from serve_app.storage.objects import ObjectStore
from tests.support import run
from tests.unit.handles import LocalHandle

Characters = Callable[[LocalHandle, ObjectStore], Any]


@contextmanager
def ingress_client(
    settings: Settings,
    engine: CatalogEngine,
    embedder: LocalHandle | None = None,
    characters: Characters | None = None,
    dedupe: LocalHandle | None = None,
) -> Iterator[TestClient]:
    """A client of the API; ``characters`` makes the identity routes' desk (None: not called);
    ``dedupe``: the Dedupe engine's handle, for the routes that embed an image."""
    objects = open_object_store(settings)
    catalog = LocalHandle(engine)
    feed = change_feed(settings)
    deliverer = Deliverer(
        Handles(embedder, catalog, None, None, dedupe, None, None),
        objects,
        load_places("config/landmarks.yaml"),
    )
    api = routed_api()
    api.state.api_keys, api.state.admin_keys = [b"key-a", b"key-b"], []
    api.state.services = IngressServices(
        catalog=catalog,
        deliverer=deliverer,
        looks=Looks(catalog, objects, model_manager(settings), settings),
        jobs=JobDesk(deliverer, catalog, objects, settings, {}, feed),
        characters=characters(catalog, objects) if characters else None,  # type: ignore[arg-type]
        replays=Replays(catalog),
        objects=objects,
        settings=settings,
    )
    try:
        with TestClient(api, raise_server_exceptions=False) as client:
            yield client
    finally:
        run(feed.close())
