"""Demand per prompt key, kept cheaply: each Catalog replica counts the claims it serves in
memory (``DemandCounters``) and writes a key's counters on a timer, one row per replica and key
(``storage/tables/demand.py``). Both counters decay with a half-life, in memory and on read:

    requests:  claims asked of the key (a hit or a miss), decayed; as a rate, requests/min
    top_seen:  how many variants of the key the most demanding recent user has had once served,
               decayed the same way (a user who stops asking stops counting)

``ReserveConfig`` bounds the reserve these counters drive (``catalog/reserve.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from serve_app.ids import new_ulid


class ReserveConfig(BaseModel):
    """The reserve: unseen variants kept ahead of hot keys' most demanding recent users."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        default=False,
        description="Refill hot keys in the background (reserve jobs, below every user's "
        "work). Demand is counted either way.",
    )
    depth: int = Field(
        default=2,
        ge=1,
        le=20,
        description="Unseen variants kept ahead of a hot key's most demanding recent user.",
    )
    max_keys: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Hot keys kept refilled, hottest first; also the most refills queued at once.",
    )
    hot_per_min: float = Field(
        default=1.0,
        gt=0,
        description="Requests per minute (decayed, all Catalog replicas) at which a key is hot.",
    )
    refills_per_min: int = Field(
        default=12, ge=1, le=10_000, description="Refill renders started per minute, at most."
    )
    max_running: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Refills rendering at once, cluster-wide: the render replicas refills may "
        "hold. Keep it a share of the Renderer's replicas (half, say); a JobWorker replica "
        "also leases a refill only while it keeps a slot free for users' jobs.",
    )
    half_life_s: float = Field(
        default=300,
        gt=0,
        description="Half-life of the demand counters: how fast a key cools down and a user's "
        "lead is forgotten.",
    )
    every_s: float = Field(
        default=5,
        gt=0,
        le=300,
        description="How often a Catalog replica writes its demand counters and plans refills "
        "(one replica plans at a time).",
    )


def decayed(value: float, age_ms: float, half_life_s: float) -> float:
    return value * 0.5 ** (max(0.0, age_ms) / (half_life_s * 1000))


def per_minute(requests: float, half_life_s: float) -> float:
    """The steady request rate whose decayed count is ``requests``."""
    return requests * 60 * math.log(2) / half_life_s


@dataclass
class Tally:
    requests: float
    top_seen: float
    at_ms: int
    dirty: bool = True


@dataclass(frozen=True)
class KeyDemand:
    """A key's demand, all replicas together, as of a read."""

    pk_id: str
    per_min: float
    top_seen: float

    def short_of(self, variants: int, depth: int) -> int:
        """Variants to add so that ``depth`` are unseen by the most demanding user."""
        return math.ceil(self.top_seen - 1e-9) + depth - variants


class DemandCounters:
    """One Catalog replica's counters, by key (only keys asked of lately: cold ones go)."""

    def __init__(self, half_life_s: float = ReserveConfig().half_life_s) -> None:
        self.replica_id = new_ulid()
        self.half_life_s = half_life_s
        self.tallies: dict[str, Tally] = {}

    def note(self, pk_id: str, seen: int, ts: int) -> None:
        """A user asked for the key and has had ``seen`` of its variants once served."""
        tally = self.tallies.get(pk_id)
        if tally is None:
            self.tallies[pk_id] = Tally(1.0, float(seen), ts)
            return
        self._decay(tally, ts)
        tally.requests += 1
        tally.top_seen = max(tally.top_seen, float(seen))
        tally.dirty = True

    def due(self, ts: int) -> list[tuple[str, Tally]]:
        """The keys counted since the last flush (marked written); keys gone cold are forgotten."""
        flushed = []
        for pk_id, tally in list(self.tallies.items()):
            if tally.dirty:
                self._decay(tally, ts)
                tally.dirty = False
                flushed.append((pk_id, Tally(tally.requests, tally.top_seen, ts, False)))
            elif decayed(tally.requests, ts - tally.at_ms, self.half_life_s) < 0.01:
                del self.tallies[pk_id]
        return flushed

    def _decay(self, tally: Tally, ts: int) -> None:
        factor = decayed(1.0, ts - tally.at_ms, self.half_life_s)
        tally.requests *= factor
        tally.top_seen *= factor
        tally.at_ms = ts
