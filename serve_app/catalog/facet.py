"""What every catalog facet shares: the store, the object store, the settings it reads, the
key indexes and the cost ledger, set once by the engine that mixes the facets in."""

from __future__ import annotations

from typing import Protocol

from serve_app.catalog.demand import DemandCounters, ReserveConfig
from serve_app.catalog.estimates import StageDefaults
from serve_app.catalog.key_index import SoulIndexes
from serve_app.catalog.ledger import Ledger
from serve_app.storage.objects import ObjectStore
from serve_app.storage.tables import CatalogStore


class FacetConfig(Protocol):
    """The catalog settings facets read (the Catalog deployment's config has them all)."""

    similarity_threshold: float
    sweep_every_s: float
    orphan_grace_s: float
    reserve: ReserveConfig
    estimates: StageDefaults


class Facet:
    store: CatalogStore
    objects: ObjectStore | None  # where snapshots of large souls' key indexes are kept, if anywhere
    config: FacetConfig
    indexes: SoulIndexes
    ledger: Ledger
    demand: DemandCounters  # this replica's demand per key, flushed by the reserve
