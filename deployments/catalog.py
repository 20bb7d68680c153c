"""Catalog: souls, styles, prompt keys (an index per soul), variants, claims, shots, locks,
idempotency records, costs and jobs; one facet per table family (``serve_app.catalog``), mixed
into one deployment, so every facet's methods are callable through one handle."""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, ConfigDict, Field
from ray import serve

from serve_app.catalog.asset_derived import DerivedImages
from serve_app.catalog.asset_images import AssetImages
from serve_app.catalog.asset_search import AssetSearch
from serve_app.catalog.costs import Costs
from serve_app.catalog.demand import DemandCounters, ReserveConfig
from serve_app.catalog.estimates import StageDefaults
from serve_app.catalog.frames import Frames
from serve_app.catalog.identities import Identities
from serve_app.catalog.jobs import Jobs
from serve_app.catalog.key_index import SoulIndexes
from serve_app.catalog.key_vectors import KeyIndexConfig
from serve_app.catalog.keys import PromptKeys
from serve_app.catalog.ledger import CostConfig, Ledger
from serve_app.catalog.locks import WorkLocks
from serve_app.catalog.projects import Projects
from serve_app.catalog.replays import ReplayRecords
from serve_app.catalog.reserve import Reserve
from serve_app.catalog.shots import Shots
from serve_app.catalog.souls import SoulStyles, load_souls
from serve_app.catalog.stories import Stories
from serve_app.catalog.sweeper import Sweeping
from serve_app.catalog.timeline import Timeline
from serve_app.catalog.variants import Variants
from serve_app.schemas import SoulSpec
from serve_app.settings import Settings
from serve_app.storage import (
    CatalogStore,
    ObjectStore,
    change_feed,
    open_object_store,
    store_for,
)
from serve_app.storage.changes import ChangeFeed


class CatalogConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    similarity_threshold: float = Field(
        default=0.85, ge=0.0, le=1.0, description="Cosine at or above which a cue reuses a key."
    )
    embedding_dim: int = Field(default=384, ge=1, description="Width of the Embedder's vectors.")
    index: KeyIndexConfig = Field(
        default_factory=KeyIndexConfig, description="Each soul's index of prompt keys."
    )
    sweep_every_s: float = Field(
        default=300,
        gt=0,
        description="How often expired work locks, idempotency records and orphan objects are "
        "deleted.",
    )
    orphan_grace_s: float = Field(
        default=3600,
        gt=0,
        description="Age after which a variant's objects without a variant row are orphans "
        "(keep it above the slowest render, animation and encode).",
    )
    cost: CostConfig = Field(
        default_factory=CostConfig,
        description="What a second of each deployment costs, and the daily budget.",
    )
    reserve: ReserveConfig = Field(
        default_factory=ReserveConfig, description="Unseen variants kept ahead for hot keys."
    )
    estimates: StageDefaults = Field(
        default_factory=StageDefaults,
        description="What an estimate by stages (generate-all) counts for a stage not measured "
        "yet.",
    )


class CatalogEngine(
    SoulStyles,
    PromptKeys,
    Variants,
    Shots,
    WorkLocks,
    ReplayRecords,
    Costs,
    Reserve,
    Jobs,
    Sweeping,
    Identities,
    Projects,
    AssetSearch,
    Timeline,
    Frames,
    Stories,
    AssetImages,
    DerivedImages,
):
    """Every facet over one store; ``objects``: where snapshots of large souls' key indexes are
    kept (and orphans swept), if anywhere; ``changes``: the store's change feed, which waiting
    leases listen to (without one they wait for the clock only)."""

    def __init__(
        self,
        store: CatalogStore,
        config: CatalogConfig | None = None,
        objects: ObjectStore | None = None,
        changes: ChangeFeed | None = None,
    ) -> None:
        super().__init__()
        self.store = store
        self.objects = objects
        self.changes = changes
        self.config = config or CatalogConfig()
        self.indexes = SoulIndexes(store, objects, self.config.embedding_dim, self.config.index)
        self.ledger = Ledger(self.config.cost)
        self.demand = DemandCounters(self.config.reserve.half_life_s)

    async def start(self, souls: list[SoulSpec]) -> None:
        """Open the store and seed souls idempotently: styles only where none exists yet."""
        await self.store.open()
        await self.seed_souls(souls)

    def configure(self, config: CatalogConfig) -> None:
        self.config = config
        self.indexes.config = config.index
        self.ledger.config = config.cost
        self.demand.half_life_s = config.reserve.half_life_s

    async def close(self) -> None:
        if self.changes is not None:
            await self.changes.close()
        await self.indexes.close()
        await self.store.close()

    async def ping(self) -> None:
        await self.store.ping()


@serve.deployment(name="Catalog", ray_actor_options={"num_cpus": 0.1}, max_ongoing_requests=64)
class Catalog(CatalogEngine):
    """The engine itself is the deployment: Serve finds handle methods with ``getattr``, so
    every method of every facet is callable through a handle."""

    async def __init__(self, souls_file: str) -> None:  # type: ignore[misc]  # Serve awaits it
        settings = Settings()
        objects = open_object_store(settings)  # key index snapshots; orphans to sweep
        super().__init__(store_for(settings), objects=objects, changes=change_feed(settings))
        await self.start(load_souls(souls_file))  # opens the store (and its pool)
        self._sweeping = asyncio.create_task(self._sweep_forever())
        self._reserving = asyncio.create_task(self._reserve_forever())

    def reconfigure(self, config: dict) -> None:
        self.configure(CatalogConfig.model_validate(config))

    async def __del__(self) -> None:
        self._sweeping.cancel()
        self._reserving.cancel()
        await self.close()
