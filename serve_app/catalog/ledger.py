"""What variants cost: the seconds each stage of a variant held its replica (a GPU's seconds
under the GPU config), priced per deployment, summed per soul and UTC day, against a daily
budget.

A variant's render seconds count every render its dedupe attempts made, kept or not: a
rejected render was paid for by the variant that replaced it.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.metrics import count, gauge
from serve_app.schemas import VariantCost

log = logging.getLogger("ray.serve")

Priced = Literal["Renderer", "Animator", "Transcoder"]
# The stage each priced deployment runs: its seconds field in VariantCost.
STAGE_OF: dict[Priced, Literal["render", "animate", "encode"]] = {
    "Renderer": "render",
    "Animator": "animate",
    "Transcoder": "encode",
}


def _list_prices() -> dict[Priced, float]:
    # An on-demand L4 is about $0.85 an hour; a CPU core about $0.035.
    return {"Renderer": 0.000236, "Animator": 0.000236, "Transcoder": 0.00001}


class CostConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    usd_per_second: dict[Priced, float] = Field(
        default_factory=_list_prices,
        description="Price of one second of each deployment's replica (its GPU, where it has "
        "one); a deployment left out costs nothing.",
    )
    daily_budget_usd: float | None = Field(
        default=None,
        gt=0,
        description="Spend per UTC day, all souls together, that soul_cost_budget_warning "
        "watches; None: no budget.",
    )
    warn_at: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Share of the daily budget at which soul_cost_budget_warning turns 1.",
    )


def utc_day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date().isoformat()


class Ledger:
    """Prices a variant's seconds when the catalog records it, and tells the metrics."""

    def __init__(self, config: CostConfig | None = None) -> None:
        self.config = config or CostConfig()
        self._warned_day = ""

    def priced(self, cost: VariantCost, ts_ms: int) -> VariantCost:
        """``cost`` with its day (of ``ts_ms``, UTC) and its price in dollars."""
        usd = sum(self._by_stage(cost).values())
        return cost.model_copy(update={"day": utc_day(ts_ms), "usd": round(usd, 9)})

    def spent(self, soul_id: str, cost: VariantCost, day_usd: float) -> None:
        """A new variant's cost is recorded; ``day_usd``: its day's spend, all souls, with it."""
        for stage, usd in self._by_stage(cost).items():
            count("soul_cost_usd", usd, soul_id=soul_id, stage=stage)
        warning = self.over_warning(day_usd)
        gauge("soul_cost_today_usd", day_usd)
        gauge("soul_cost_budget_warning", float(warning))
        if warning and self._warned_day != cost.day:
            self._warned_day = cost.day
            log.warning(
                "spend of %s is $%.2f, past %.0f%% of the daily budget of $%.2f",
                cost.day,
                day_usd,
                100 * self.config.warn_at,
                self.config.daily_budget_usd,
            )

    def _by_stage(self, cost: VariantCost) -> dict[str, float]:
        """Dollars of each priced stage: its seconds at its deployment's price."""
        return {
            STAGE_OF[deployment]: getattr(cost, f"{STAGE_OF[deployment]}_s") * price
            for deployment, price in self.config.usd_per_second.items()
        }

    def over_warning(self, day_usd: float) -> bool:
        budget = self.config.daily_budget_usd
        return budget is not None and day_usd >= self.config.warn_at * budget
