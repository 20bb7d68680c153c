"""A small world for the Deliverer without Ray: one SQLite catalog file and one object folder
shared by "replicas", each with its own catalog engine and Deliverer over plain handles."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from deployments.animator import AnimatorEngine
from deployments.catalog import CatalogEngine
from deployments.dedupe import DedupeEngine
from deployments.renderer import RendererEngine
from deployments.transcoder import TranscoderConfig, TranscoderEngine
from deployments.upscaler import UpscalerEngine
from serve_app.catalog.souls import load_souls
from serve_app.delivery import Deliverer, Delivery, DeliveryConfig, Handles
from serve_app.delivery.places import load_places
from serve_app.schemas import Frames, RenderJob
from serve_app.storage.changes import DatagramFeed
from serve_app.storage.local import LocalObjectStore, MediaSigner
from serve_app.storage.sqlite import SQLiteStore
from tests.support import run
from tests.unit.handles import LocalHandle, OneUpscale


class Gate:
    """A renderer that waits at the door until released: a render that takes as long as a test
    needs."""

    def __init__(self, renderer: RendererEngine) -> None:
        self.renderer = renderer
        self.entered, self.open = threading.Event(), threading.Event()

    def render(self, job: RenderJob) -> Frames:
        self.entered.set()
        self.open.wait(timeout=60)
        return self.renderer.render(job)


class Replica:
    """One Ingress replica's Deliverer with its own catalog engine (one SQLite file for all, a
    change feed each: a lease waiting in one hears of a job queued through another)."""

    def __init__(self, world: World, config: DeliveryConfig, renderer: Any, dedupe: Any) -> None:
        self.catalog = CatalogEngine(
            SQLiteStore(world.db), objects=world.objects, changes=DatagramFeed(world.db)
        )
        run(self.catalog.start(load_souls("config/souls.yaml")))
        self.transcoder = TranscoderEngine(world.objects, TranscoderConfig(width=64))
        self.handles = Handles(
            embedder=world.embedder,
            catalog=LocalHandle(self.catalog),
            renderer=LocalHandle(renderer),
            animator=LocalHandle(world.animator),
            dedupe=LocalHandle(dedupe),
            transcoder=LocalHandle(self.transcoder),
            upscaler=LocalHandle(OneUpscale(world.upscaler)),
        )
        places = load_places("config/landmarks.yaml")
        self.deliverer = Deliverer(self.handles, world.objects, places, config)

    @property
    def renders(self) -> int:
        return int(self.handles.renderer.calls["render"])

    def image(self, cue: str, user_id: str, soul_id: str = "nova") -> Delivery:
        return run(self.deliverer.image(soul_id, cue, user_id))


class World:
    """The shared state: a catalog file and an object folder."""

    def __init__(
        self,
        tmp_path: Path,
        renderer: RendererEngine,
        animator: AnimatorEngine,
        embedder: Any,
        upscaler: UpscalerEngine,
    ) -> None:
        self.db = tmp_path / "catalog.db"
        self.objects = LocalObjectStore(str(tmp_path / "objects"), MediaSigner(b"k" * 32))
        self.renderer, self.animator, self.embedder = renderer, animator, embedder
        self.upscaler = upscaler
        self.replicas: list[Replica] = []
        self.feeds: list[DatagramFeed] = []

    def replica(self, renderer: Any = None, dedupe: Any = None, **config: Any) -> Replica:
        replica = Replica(
            self,
            DeliveryConfig(**config),
            renderer or self.renderer,
            dedupe or DedupeEngine(),
        )
        self.replicas.append(replica)
        return replica

    def feed(self) -> DatagramFeed:
        """An Ingress replica's feed of the catalog's job changes."""
        self.feeds.append(DatagramFeed(self.db))
        return self.feeds[-1]

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        db = sqlite3.connect(self.db)
        try:
            return db.execute(sql, params).fetchall()
        finally:
            db.close()

    def variant_ids(self) -> set[str]:
        return {row[0] for row in self.rows("SELECT variant_id FROM variant")}

    def object_variant_ids(self) -> set[str]:
        """The variant each object under soul/ belongs to, by its file name."""
        keys = self.objects.list("soul/")
        return {k.rpartition("/")[2].partition(".")[0] for k in keys if "/variant/" in k}

    def seen(self, user_id: str) -> set[str]:
        return {
            r[0] for r in self.rows("SELECT variant_id FROM user_seen WHERE user_id = ?", user_id)
        }

    def close(self) -> None:
        for feed in self.feeds:
            run(feed.close())
        for replica in self.replicas:
            run(replica.catalog.close())
