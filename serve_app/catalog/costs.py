"""The costs facet: what variants cost, per UTC day and soul, against the daily budget (the
prices and the budget are the ``Ledger``'s)."""

from __future__ import annotations

from serve_app.catalog.facet import Facet
from serve_app.schemas import CostDay, CostReport


class Costs(Facet):
    async def cost_report(self, since: str, today: str) -> CostReport:
        """Spend per UTC day from ``since`` and soul, and today's against the budget."""
        rows = await self.store.cost_by_day(since)
        days = [
            CostDay(
                day=r["cost_day"],
                soul_id=r["soul_id"],
                variants=r["variants"],
                render_s=round(r["render_s"], 3),
                animate_s=round(r["animate_s"], 3),
                encode_s=round(r["encode_s"], 3),
                usd=round(r["usd"], 6),
            )
            for r in rows
        ]
        # Today's spend from the same rows when they hold today, so that the report adds up:
        # both sums are rounded once, and no variant recorded between two reads is in one only.
        todays = [r["usd"] for r in rows if r["cost_day"] == today]
        spent_today = sum(todays) if since <= today else await self.store.day_cost_usd(today)
        budget = self.ledger.config.daily_budget_usd
        return CostReport(
            since=since,
            days=days,
            usd=round(sum(r["usd"] for r in rows), 6),
            today_usd=round(spent_today, 6),
            daily_budget_usd=budget,
            budget_used=None if budget is None else round(spent_today / budget, 4),
            budget_warning=self.ledger.over_warning(spent_today),
        )
