"""The catalog's tables, one module per family (its DDL and its statements); ``CatalogStore``
mixes them into the store a backend runs. A new family: a module here and a base below."""

from serve_app.storage.tables.asset_derived import AssetDerivedRows
from serve_app.storage.tables.asset_images import AssetImageRows
from serve_app.storage.tables.claims import ClaimRows
from serve_app.storage.tables.demand import DemandRows
from serve_app.storage.tables.identities import IdentityRows
from serve_app.storage.tables.job_slots import JobSlotRows
from serve_app.storage.tables.jobs import JobRows
from serve_app.storage.tables.keys import KeyRows
from serve_app.storage.tables.locks import LockRows
from serve_app.storage.tables.projects import ProjectRows
from serve_app.storage.tables.replays import ReplayRows
from serve_app.storage.tables.shots import ShotRows
from serve_app.storage.tables.souls import SoulRows
from serve_app.storage.tables.stories import StoryRows
from serve_app.storage.tables.variants import VariantRows


class CatalogStore(
    SoulRows,
    KeyRows,
    VariantRows,
    ClaimRows,
    ShotRows,
    LockRows,
    ReplayRows,
    JobRows,
    DemandRows,
    IdentityRows,
    ProjectRows,
    StoryRows,
    AssetImageRows,
    AssetDerivedRows,
    JobSlotRows,
):
    """Every table family's statements; a backend (SQLite, PostgreSQL) says how to run them."""


__all__ = ["CatalogStore"]
