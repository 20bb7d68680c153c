"""Statistics for operators (admin keys only): what the variants cost."""

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from serve_app.api.deps import AdminOnly
from serve_app.api.errors import responses
from serve_app.api.services import Services
from serve_app.schemas import CostReport, Day

router = APIRouter(tags=["stats"], dependencies=[AdminOnly])


@router.get("/stats/cost", response_model=CostReport, responses=responses(401, 403, 422, 503))
async def cost(
    services: Services,
    since: Annotated[
        Day | None, Query(description="First UTC day counted; default: six days ago.")
    ] = None,
) -> CostReport:
    """What variants cost (admin keys only): per UTC day and soul, the seconds of their
    render, animation and encode and their price (``catalog.cost``), and today's spend
    against the daily budget."""
    today = dt.datetime.now(dt.UTC).date()
    first = since or today - dt.timedelta(days=6)
    report: CostReport = await services.catalog.cost_report.remote(
        first.isoformat(), today.isoformat()
    )
    return report
